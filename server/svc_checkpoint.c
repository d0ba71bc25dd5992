/* CheckpointService (proto/engram/v1/agent_state.proto). */
#include "server/service.h"

const eg_method eg_checkpoint_methods[] = {{0}};
