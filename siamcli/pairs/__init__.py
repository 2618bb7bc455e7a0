"""Jobs on pairs of images: `verify` (same identity or not, and how sure)."""
