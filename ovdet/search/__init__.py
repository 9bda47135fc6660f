"""A persistent region index of a photo collection (`ovdet index`) and text / exemplar search over it (`ovdet search`)."""
