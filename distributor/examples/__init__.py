"""The bundled example issue."""
