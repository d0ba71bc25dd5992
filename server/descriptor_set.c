/* The descriptor set server reflection answers from, built by protoc at
 * build time (CMakeLists.txt, EG_DESCRIPTOR_SET) and embedded here as it
 * is: a serialized google.protobuf.FileDescriptorSet. */
#include "server/reflection.h"

__asm__(".pushsection .rodata\n"
        ".balign 16\n"
        ".globl eg_descriptor_set\n"
        "eg_descriptor_set:\n"
        ".incbin \"" EG_DESCRIPTOR_SET_PATH "\"\n"
        ".globl eg_descriptor_set_end\n"
        "eg_descriptor_set_end:\n"
        ".popsection\n");
