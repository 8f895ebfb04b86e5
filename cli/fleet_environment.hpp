// Fleet mode's settings from the environment (PIDLOCK_ETCD_*), where the command line left them.
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "commands.hpp"

namespace pidlock::cli {

// Fleet settings that the command line left unset, from the environment, as etcdctl takes
// ETCDCTL_*: so that a fleet's hosts can share one configuration. The password is not read here
// but where it is used (fleet.cpp), and --insecure-skip-verify has no variable: turning off
// verification must be visible on the command line.
// `given(option)` says whether the command line set that option. Returns the problem, if any.
std::optional<std::string> take_environment(FleetRequest& fleet,
                                            const std::function<bool(const std::string&)>& given);

}  // namespace pidlock::cli
