/* Every service table engramd serves, listed once: the transport registers
 * them and the wire fuzzer decodes their request types. */
#include "server/service.h"

const eg_method *const eg_service_tables[] = {eg_session_methods, eg_health_methods,
                                              eg_admin_methods,   eg_replication_methods,
                                              eg_memory_methods,  eg_user_methods,
                                              eg_reflection_methods, eg_checkpoint_methods,
                                              eg_store_methods,   eg_keys_methods,
                                              eg_tenant_methods,  eg_key_rotation_methods,
                                              eg_limits_methods,  NULL};
