"""Background jobs: the interface (`base`), the core jobs, and the registry that builds them."""
