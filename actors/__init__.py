"""Long-running actors supervised in the root nursery, and the domain logic they run."""
