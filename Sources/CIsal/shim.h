#pragma once
// Intel ISA-L's inflate (igzip): the same DEFLATE as zlib, about three times faster on this hardware, which is
// what a whole-layer download spends most of its CPU on.
#include <isa-l/igzip_lib.h>
