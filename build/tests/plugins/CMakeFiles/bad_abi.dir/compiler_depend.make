# Empty compiler generated dependencies file for bad_abi.
# This may be replaced when dependencies are built.
