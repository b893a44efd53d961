"""Redis adapters: thin code that turns the core's decisions into Redis commands."""
