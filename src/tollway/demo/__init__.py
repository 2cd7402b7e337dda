"""Demo pieces for local stacks: a sample upstream API that echoes what reached it."""
