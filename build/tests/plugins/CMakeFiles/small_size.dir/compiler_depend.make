# Empty compiler generated dependencies file for small_size.
# This may be replaced when dependencies are built.
