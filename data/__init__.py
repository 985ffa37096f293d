"""Getting images: sources, downloads, archives, the built-in dataset, index, split, cache."""
