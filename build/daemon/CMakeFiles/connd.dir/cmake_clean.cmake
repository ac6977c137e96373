file(REMOVE_RECURSE
  "CMakeFiles/connd.dir/main.c.o"
  "CMakeFiles/connd.dir/main.c.o.d"
  "connd"
  "connd.pdb"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/connd.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
