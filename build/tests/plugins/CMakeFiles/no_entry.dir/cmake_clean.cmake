file(REMOVE_RECURSE
  "CMakeFiles/no_entry.dir/no_entry.c.o"
  "CMakeFiles/no_entry.dir/no_entry.c.o.d"
  "no_entry.pdb"
  "no_entry.so"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/no_entry.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
