// Compiles bpf/tcptrail_event.h with the host compiler, so its static
// asserts also hold for the layout Swift imports.
#include "../../bpf/tcptrail_event.h"
