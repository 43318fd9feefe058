"""One testbed for the tests' fixtures, the benchmarks and the demo (issue 16).

``netns``: a bridge namespace and node namespaces wired to it (addresses, hosts files,
links, teardown, the sweep of what a killed run left), and threads that live inside a
namespace. ``postgres``: a primary and a streaming standby. ``rabbitmq``: a cluster of
RabbitMQ nodes. ``csync2``: the group's config and a node's server. Each takes options
for what its users differ in (addresses, ports, a command prefix to run inside a
namespace); none knows pytest. Not shipped (``pyproject.toml`` packages ``haflowd*`` only).
"""
