/* AdminService: DeleteTenant: a whole tenant's erasure, records and data keys. */
#include "server/service.h"

const eg_method eg_tenant_methods[] = {
    {.path = NULL},
};
