file(REMOVE_RECURSE
  "CMakeFiles/testplug.dir/testplug.c.o"
  "CMakeFiles/testplug.dir/testplug.c.o.d"
  "testplug.pdb"
  "testplug.so"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/testplug.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
