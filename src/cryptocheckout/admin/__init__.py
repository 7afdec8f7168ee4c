"""The staff's API and console, behind the ADMIN_TOKEN bearer token."""
