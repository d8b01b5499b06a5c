"""``mailintake``: the operator's command over the config API."""
