"""One router per resource of the management API."""
