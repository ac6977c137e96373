file(REMOVE_RECURSE
  "CMakeFiles/small_size.dir/small_size.c.o"
  "CMakeFiles/small_size.dir/small_size.c.o.d"
  "small_size.pdb"
  "small_size.so"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/small_size.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
