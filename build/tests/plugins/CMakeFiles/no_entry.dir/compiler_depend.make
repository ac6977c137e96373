# Empty compiler generated dependencies file for no_entry.
# This may be replaced when dependencies are built.
