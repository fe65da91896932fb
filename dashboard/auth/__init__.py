"""Identity, roles and guards."""
