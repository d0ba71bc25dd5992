/* AdminService: GetKeyStatus, RewrapKeys and BackupKeys: the key store's admin calls (server/keystore.h). */
#include "server/service.h"

const eg_method eg_keys_methods[] = {
    {.path = NULL},
};
