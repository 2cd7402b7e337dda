"""Stage 2, *may they do this, now?*: route → feature → granted by the plan? → limits and quota."""
