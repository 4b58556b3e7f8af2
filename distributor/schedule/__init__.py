"""Scheduled sends: the jobs table, the runner that claims due jobs, zones, the operator's report."""
