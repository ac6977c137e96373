file(REMOVE_RECURSE
  "CMakeFiles/connd_test_plugins"
)

# Per-language clean rules from dependency scanning.
foreach(lang )
  include(CMakeFiles/connd_test_plugins.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
