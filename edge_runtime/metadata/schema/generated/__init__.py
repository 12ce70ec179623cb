"""flatc's modules: do not edit."""
