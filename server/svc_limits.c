/* AdminService: GetTenantLimits and SetTenantLimits (server/limits.h). */
#include "server/service.h"

const eg_method eg_limits_methods[] = {
    {.path = NULL},
};
