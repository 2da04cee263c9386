"""Run a ROS 2 launch file where ``ros2 launch`` is not installed (pip-only machines).

    semseg-launch [perception.launch.py | semseg_ros perception.launch.py | path] [name:=value ...]

With the real ``launch`` / ``launch_ros`` importable, the file runs through ``launch.LaunchService``
exactly as ``ros2 launch`` would. Otherwise small stand-ins for the subset a plain node launch file
uses (LaunchDescription, DeclareLaunchArgument, OpaqueFunction, LaunchConfiguration,
launch_ros Node) are put into ``sys.modules``: arguments are resolved, each Node becomes a process
``<executable> --ros-args -r __node:=... -r __ns:=... -r from:=to --params-file ...``, SIGINT/SIGTERM
are forwarded. The runner says which one it uses.

Where it differs from ``ros2 launch`` (measured with launch 3.4.3 / launch_ros 0.26.6), on purpose:
- exit code: the node's own (non-zero when it fails to start or dies); ``ros2 launch`` exits 0 then.
- a params file that does not exist is refused; ``ros2 launch`` warns and starts the node without it.
Where it behaves the same: an undeclared ``name:=value`` is ignored (with a warning naming the declared
ones); a launch file's error (e.g. ``image_topic:=`` empty, an invalid node name) is one line, its traceback
only with ``-d``. Options: ``-s/--show-args``, ``-p/--print-description`` (the node command lines),
``-d/--debug``, ``--launch-prefix`` as in ``ros2 launch``; ``-a/--show-all-subprocesses-output`` is
accepted and has no effect (the node's output is always shown).
"""
import argparse
import importlib.util
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import traceback
import types
from pathlib import Path

import yaml

PACKAGE = "semseg_ros"
SOURCE_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_LAUNCH_FILE = "perception.launch.py"


class LaunchError(RuntimeError):
    pass


# ---- stand-ins for launch / launch_ros ---------------------------------------------------------
class LaunchContext:
    def __init__(self, launch_configurations):
        self.launch_configurations = dict(launch_configurations)


class LaunchConfiguration:
    def __init__(self, variable_name, default=None):
        self.variable_name = variable_name
        self.default = default

    def perform(self, context):
        if self.variable_name in context.launch_configurations:
            return context.launch_configurations[self.variable_name]
        if self.default is not None:
            return perform(self.default, context)
        raise LaunchError(f"launch configuration '{self.variable_name}' is not set")


class TextSubstitution:
    def __init__(self, text=""):
        self.text = text

    def perform(self, context):
        return self.text


def perform(value, context):
    """Resolve a substitution, a string, or a list of them to a string."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return "".join(perform(part, context) for part in value)
    return value.perform(context)


class LaunchDescription:
    def __init__(self, initial_entities=None):
        self.entities = list(initial_entities or [])

    def add_action(self, action):
        self.entities.append(action)


class DeclareLaunchArgument:
    def __init__(self, name, default_value=None, description="", choices=None, **_):
        self.name = name
        self.default_value = default_value
        self.description = description
        self.choices = choices


class OpaqueFunction:
    def __init__(self, function, args=None, kwargs=None):
        self.function, self.args, self.kwargs = function, args or [], kwargs or {}


class Node:
    def __init__(self, executable, package=None, name=None, namespace=None, parameters=None,
                 remappings=None, arguments=None, ros_arguments=None, **_unsupported):
        self.package, self.executable = package, executable
        self.name, self.namespace = name, namespace
        self.parameters = list(parameters or [])
        self.remappings = list(remappings or [])
        self.arguments = list(arguments or [])
        self.ros_arguments = list(ros_arguments or [])


def _module(name, **attributes):
    module = types.ModuleType(name)
    module.__dict__.update(attributes)
    module.__file__ = __file__
    return module


def _has_real(module_name, attribute):
    try:
        if importlib.util.find_spec(module_name) is None:
            return False
        module = importlib.import_module(module_name)
    except Exception:
        return False
    return hasattr(module, attribute)


def install_stand_ins():
    """Put the stand-in modules into sys.modules (only those whose real module is absent)."""
    launch = _module("launch", LaunchDescription=LaunchDescription, LaunchContext=LaunchContext)
    launch.actions = _module("launch.actions", DeclareLaunchArgument=DeclareLaunchArgument,
                             OpaqueFunction=OpaqueFunction)
    launch.substitutions = _module("launch.substitutions", LaunchConfiguration=LaunchConfiguration,
                                   TextSubstitution=TextSubstitution)
    launch_ros = _module("launch_ros")
    launch_ros.actions = _module("launch_ros.actions", Node=Node)
    for module in (launch, launch.actions, launch.substitutions, launch_ros, launch_ros.actions):
        sys.modules[module.__name__] = module
    _ensure_package_share()


def _ensure_package_share():
    """get_package_share_directory('semseg_ros') falls back to the source tree when not installed."""
    try:
        import ament_index_python.packages as packages  # optional: absent on pip-only machines
    except ImportError:
        packages = _module("ament_index_python.packages")
        sys.modules["ament_index_python"] = _module("ament_index_python", packages=packages)
        sys.modules["ament_index_python.packages"] = packages
        packages.PackageNotFoundError = KeyError
        packages.get_package_share_directory = None
    original = packages.get_package_share_directory

    def get_package_share_directory(package_name, *args, **kwargs):
        if original is not None:
            try:
                return original(package_name, *args, **kwargs)
            except Exception:
                if package_name != PACKAGE:
                    raise
        if package_name == PACKAGE:
            return str(SOURCE_ROOT)
        raise LaunchError(f"package '{package_name}' not found")

    packages.get_package_share_directory = get_package_share_directory


# ---- running ---------------------------------------------------------------------------------
def find_launch_file(positional):
    """Resolve ``[package] file`` the way ``ros2 launch`` does, plus a plain path."""
    if len(positional) == 2:
        package, name = positional
    elif len(positional) == 1:
        if os.path.isfile(positional[0]):
            return Path(positional[0]).resolve()
        package, name = PACKAGE, positional[0]
    elif not positional:
        package, name = PACKAGE, DEFAULT_LAUNCH_FILE
    else:
        raise LaunchError(f"expected [package] launch_file, got {positional}")
    candidates = []
    if package == PACKAGE:
        candidates.append(SOURCE_ROOT / "launch" / name)
    try:
        from ament_index_python.packages import get_package_share_directory  # optional, or our stand-in
        candidates.insert(0, Path(get_package_share_directory(package)) / "launch" / name)
    except Exception:
        pass
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise LaunchError(f"launch file '{name}' of package '{package}' not found "
                      f"(looked in {', '.join(map(str, candidates)) or 'nothing'})")


def load_launch_file(path):
    spec = importlib.util.spec_from_file_location(f"_launch_{Path(path).stem.replace('.', '_')}",
                                                  str(path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.generate_launch_description()


def resolve_nodes(description, launch_arguments):
    """Expand the description with ``launch_arguments`` into a list of (Node, context)."""
    declared, nodes = {}, []
    context = LaunchContext({})

    def visit(entities):
        for entity in entities:
            if isinstance(entity, DeclareLaunchArgument):
                declared[entity.name] = entity
                if entity.name in launch_arguments:
                    value = launch_arguments[entity.name]
                elif entity.default_value is not None:
                    value = perform(entity.default_value, context)
                else:
                    raise LaunchError(f"launch argument '{entity.name}' is required "
                                      f"({entity.description})")
                if entity.choices and value not in entity.choices:
                    raise LaunchError(f"launch argument '{entity.name}' = {value!r}; expected one "
                                      f"of {entity.choices}")
                context.launch_configurations[entity.name] = value
            elif isinstance(entity, OpaqueFunction):
                visit(entity.function(context, *entity.args, **entity.kwargs) or [])
            elif isinstance(entity, Node):
                nodes.append((entity, LaunchContext(context.launch_configurations)))
            else:
                raise LaunchError(f"the pip-only launch runner does not support "
                                  f"{type(entity).__name__}; use ros2 launch")

    visit(description.entities)
    unknown = sorted(set(launch_arguments) - set(declared))
    if unknown:  # ros2 launch ignores them silently; a typo deserves a word
        print(f"[semseg-launch] warning: ignoring undeclared launch argument(s) {', '.join(unknown)} "
              f"(declared: {', '.join(sorted(declared))})", file=sys.stderr, flush=True)
    return nodes


def find_executable(package, executable):
    """``$prefix/lib/<package>/<exe>`` over AMENT_PREFIX_PATH, then PATH, then ``python -m``."""
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    for prefix in prefixes + [sys.prefix]:
        candidate = Path(prefix) / "lib" / package / executable
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return [str(candidate)]
    found = shutil.which(executable, path=os.pathsep.join([str(Path(sys.executable).parent),
                                                           os.environ.get("PATH", "")]))
    if found:
        return [found]
    if package == PACKAGE and executable == "perception_node":
        return [sys.executable, "-m", "semseg_ros.node_main"]
    raise LaunchError(f"executable '{executable}' of package '{package}' not found")


def node_command(node, context, temp_dir, launch_prefix=""):
    """The process command line for one Node (its inline parameters go to a temp params file)."""
    command = shlex.split(launch_prefix)
    command += find_executable(perform(node.package, context), perform(node.executable, context))
    arguments = [perform(a, context) for a in node.arguments]
    # arguments after their own --ros-args (e.g. --log-level) join the node's ROS arguments
    split = arguments.index("--ros-args") if "--ros-args" in arguments else len(arguments)
    command += arguments[:split]
    ros_args = ["--ros-args"] + arguments[split + 1:]
    name, namespace = perform(node.name, context), perform(node.namespace, context)
    if name:
        ros_args += ["-r", f"__node:={name}"]
    if namespace:
        ros_args += ["-r", f"__ns:={namespace if namespace.startswith('/') else '/' + namespace}"]
    for index, entry in enumerate(node.parameters):
        if isinstance(entry, dict):
            values = {k: (perform(v, context) if not isinstance(v, (bool, int, float)) else v)
                      for k, v in entry.items()}
            if not values:
                continue
            path = Path(temp_dir) / f"parameters_{index}.yaml"
            path.write_text(yaml.safe_dump({"/**": {"ros__parameters": _nest(values)}}))
            ros_args += ["--params-file", str(path)]
        else:
            path = perform(entry, context)
            if not os.path.isfile(path):
                raise LaunchError(f"params file not found: {path} (ros2 launch would only warn and start "
                                  f"the node without it; semseg-launch refuses)")
            ros_args += ["--params-file", path]
    for source, target in node.remappings:
        ros_args += ["-r", f"{perform(source, context)}:={perform(target, context)}"]
    ros_args += [perform(a, context) for a in node.ros_arguments]
    return command + ros_args


def _nest(flat):
    """{'image_qos.reliability': x} -> {'image_qos': {'reliability': x}} as ROS YAML expects."""
    nested = {}
    for key, value in flat.items():
        target = nested
        parts = key.split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    return nested


def run_with_stand_ins(launch_file, launch_arguments, launch_prefix="", print_only=False):
    description = load_launch_file(launch_file)
    nodes = resolve_nodes(description, launch_arguments)
    if not nodes:
        raise LaunchError(f"{launch_file} starts no node")
    with tempfile.TemporaryDirectory(prefix="semseg_launch_") as temp_dir:
        commands = [node_command(node, context, temp_dir, launch_prefix) for node, context in nodes]
        if print_only:  # the command lines, and the inline parameters that live in temp files
            for command in commands:
                print(shlex.join(command))
                for path in sorted(Path(temp_dir).glob("*.yaml")):
                    if str(path) in command:
                        print(f"# {path.name}:\n" + "".join(f"#   {line}\n" for line in
                                                             path.read_text().splitlines()), end="")
            return 0
        processes = []
        for command in commands:
            print(f"[semseg-launch] starting: {shlex.join(command)}", flush=True)
            processes.append(subprocess.Popen(command))

        def forward(signum, _frame):
            for process in processes:
                if process.poll() is None:
                    process.send_signal(signum)

        signal.signal(signal.SIGINT, forward)
        signal.signal(signal.SIGTERM, forward)
        codes = [process.wait() for process in processes]
    for (node, _), code in zip(nodes, codes):
        note = " (ros2 launch would exit 0; semseg-launch passes the code on)" if code else ""
        print(f"[semseg-launch] {node.executable} exited with code {code}{note}", flush=True)
    return next((code for code in codes if code != 0), 0)


def run_with_real_launch(launch_file, launch_arguments, launch_prefix="", debug=False, print_only=False):
    # optional: only where the real `launch` is installed (the caller checks)
    from launch import LaunchDescription, LaunchService
    from launch.actions import IncludeLaunchDescription
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    arguments = dict(launch_arguments)
    if launch_prefix:
        arguments["launch-prefix"] = launch_prefix  # what ExecuteProcess reads, as ros2 launch sets it
    include = IncludeLaunchDescription(PythonLaunchDescriptionSource(str(launch_file)),
                                       launch_arguments=arguments.items())
    if print_only:
        from launch import LaunchIntrospector  # optional, as above
        print(LaunchIntrospector().format_launch_description(LaunchDescription([include])))
        return 0
    service = LaunchService(debug=debug)
    service.include_launch_description(include)
    return service.run()


def build_parser():
    parser = argparse.ArgumentParser(prog="semseg-launch", description=__doc__.split("\n\n")[0],
                                     epilog=__doc__.split("\n\n", 2)[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("launch", nargs="*", help="[package] launch_file, then name:=value ...")
    parser.add_argument("-s", "--show-args", "--show-arguments", action="store_true",
                        help="list the launch file's arguments and exit")
    parser.add_argument("-p", "--print", "--print-description", dest="print_description",
                        action="store_true", help="print what would run (the node command lines) and exit")
    parser.add_argument("-d", "--debug", action="store_true",
                        help="tracebacks for launch errors (and the launch service's debug output)")
    parser.add_argument("-a", "--show-all-subprocesses-output", action="store_true",
                        help="accepted for ros2 launch compatibility: the node's output is always shown")
    parser.add_argument("--launch-prefix", default="",
                        help="prefix of the node command, e.g. 'gdb -ex run --args' or 'taskset -c 2'")
    return parser


def main(argv=None):
    args = build_parser().parse_intermixed_args(argv)
    positional = [a for a in args.launch if ":=" not in a]
    launch_arguments = dict(a.split(":=", 1) for a in args.launch if ":=" in a)
    real = _has_real("launch", "LaunchService") and _has_real("launch_ros.actions", "Node")
    try:
        if not real:
            install_stand_ins()
        launch_file = find_launch_file(positional)
        if args.show_args:
            for entity in load_launch_file(launch_file).entities:
                if hasattr(entity, "name") and hasattr(entity, "default_value"):
                    print(f"{entity.name}:={perform(entity.default_value, LaunchContext({}))!s}"
                          f"    {entity.description}")
            return 0
        if real:
            print(f"[semseg-launch] using the installed launch/launch_ros for {launch_file}",
                  flush=True)
            return run_with_real_launch(launch_file, launch_arguments, args.launch_prefix, args.debug,
                                        args.print_description)
        if not args.print_description:
            print(f"[semseg-launch] launch/launch_ros not installed: running {launch_file} with "
                  f"semseg_ros's pip-only stand-ins", flush=True)
        return run_with_stand_ins(launch_file, launch_arguments, args.launch_prefix, args.print_description)
    except (LaunchError, ValueError) as error:  # ValueError: the launch file's own argument checks
        if args.debug:
            traceback.print_exc()
        print(f"semseg-launch: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
