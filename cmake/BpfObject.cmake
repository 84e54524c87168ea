# bpf_object(NAME SOURCE [DEPENDS header...])
#
# Compiles bpf/NAME.bpf.c with clang -target bpf, generates NAME.skel.h with
# `bpftool gen skeleton`, and exposes INTERFACE target NAME_skel carrying the
# skeleton's include directory and libbpf. Listing the shared ABI headers in
# DEPENDS rebuilds the object and skeleton when the ABI changes.
find_program(BPF_CLANG NAMES clang clang-14 REQUIRED)
find_program(BPFTOOL NAMES bpftool PATHS /usr/sbin /usr/local/sbin REQUIRED)

set(NVQOS_BPF_OUT ${CMAKE_BINARY_DIR}/bpf)
file(MAKE_DIRECTORY ${NVQOS_BPF_OUT})
file(GLOB NVQOS_ABI_HEADERS ${CMAKE_SOURCE_DIR}/include/nvqos/*.h)
file(GLOB NVQOS_BPF_LIB_HEADERS ${CMAKE_SOURCE_DIR}/bpf/lib/*.h)

function(bpf_object name source)
  cmake_parse_arguments(ARG "" "" "DEPENDS" ${ARGN})
  set(obj ${NVQOS_BPF_OUT}/${name}.bpf.o)
  set(skel ${NVQOS_BPF_OUT}/${name}.skel.h)
  add_custom_command(
    OUTPUT ${obj}
    COMMAND ${BPF_CLANG} -g -O2 -target bpf -D__TARGET_ARCH_x86
            -Wall -Wextra -Werror -Wno-unused-parameter
            -I${CMAKE_SOURCE_DIR}/include -I${CMAKE_SOURCE_DIR}/bpf
            -I/usr/include/x86_64-linux-gnu
            -c ${source} -o ${obj}
    DEPENDS ${source} ${NVQOS_ABI_HEADERS} ${NVQOS_BPF_LIB_HEADERS} ${ARG_DEPENDS}
    COMMENT "BPF ${name}.bpf.o"
    VERBATIM)
  add_custom_command(
    OUTPUT ${skel}
    COMMAND ${BPFTOOL} gen skeleton ${obj} name ${name} > ${skel}
    DEPENDS ${obj}
    COMMENT "BPF skeleton ${name}.skel.h"
    VERBATIM)
  add_custom_target(${name}_bpf DEPENDS ${obj} ${skel})
  add_library(${name}_skel INTERFACE)
  add_dependencies(${name}_skel ${name}_bpf)
  target_include_directories(${name}_skel INTERFACE ${NVQOS_BPF_OUT})
  target_link_libraries(${name}_skel INTERFACE PkgConfig::LIBBPF nvqos_abi)
  set_property(GLOBAL APPEND PROPERTY NVQOS_BPF_OBJECTS ${obj})
endfunction()
