# Empty custom commands generated dependencies file for connd_test_plugins.
# This may be replaced when dependencies are built.
