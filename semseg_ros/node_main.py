"""The ``perception_node`` executable: Ctrl-C (or SIGTERM) at any moment of the start exits 0, quietly.

Loading rclpy, torch and the model takes seconds; a SIGINT during those imports would otherwise end the
process with a KeyboardInterrupt traceback from deep inside some import. Here SIGINT/SIGTERM are caught
before those imports: until ``semseg_ros.node.main`` installs its own handlers (the graceful shutdown),
a signal ends the process at once with code 0. Nothing needs cleaning up then: no DDS participant
exists before the node does, and node.main installs its handlers before creating it.

    perception_node [--ros-args ...]            (console script)
    python -m semseg_ros.node_main [--ros-args ...]
"""
import os
import signal
import sys


def _exit_quietly(signum, frame):
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # no exception: it could surface as a traceback (or an ImportError) from inside an import


def main(argv=None):
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is not signal.SIG_IGN:  # keep "ignore" (e.g. nohup, background jobs)
            signal.signal(signum, _exit_quietly)
    from semseg_ros import node  # deliberately here: the slow imports (rclpy, torch) run under the handlers
    return node.main(argv)


if __name__ == "__main__":
    sys.exit(main())
