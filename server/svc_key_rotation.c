/* AdminService: RotateDataKeys and RotateBlindIndexKey (server/key_rotation.h). */
#include "server/service.h"

const eg_method eg_key_rotation_methods[] = {
    {.path = NULL},
};
