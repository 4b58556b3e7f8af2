"""The packaged Jinja2 templates, one folder per channel; shipped as distributor.templates."""
