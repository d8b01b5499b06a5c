"""``make bench``: figures and ratios of mailintake against the limits of its components."""
