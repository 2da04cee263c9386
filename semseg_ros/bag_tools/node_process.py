"""The perception node as a child process of the replay tool (``--start-node``) and the demo."""
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional


class ReplayError(RuntimeError):
    """The node could not be started or reached, or the replay could not run."""


@dataclass
class NodeSpec:
    """How to start the node ourselves (``start_node``)."""
    params: Dict[str, str] = field(default_factory=dict)  # name -> value as given to -p name:=value
    log_path: Optional[Path] = None
    startup_timeout_s: float = 180.0
    remaps: Dict[str, str] = field(default_factory=dict)  # e.g. {"depth": "/camera/depth/image_rect_raw"}


class NodeProcess:
    """`python -m semseg_ros.node` as a child process, stopped with SIGINT (then SIGKILL)."""

    def __init__(self, node_name: str, namespace: str, image_topic: str, spec: NodeSpec):
        command = [sys.executable, "-m", "semseg_ros.node", "--ros-args", "-r", f"__node:={node_name}",
                   "-r", f"image:={image_topic}"]
        if namespace.strip("/"):
            command += ["-r", f"__ns:=/{namespace.strip('/')}"]
        for name, target in spec.remaps.items():
            command += ["-r", f"{name}:={target}"]
        for name, value in spec.params.items():
            command += ["-p", f"{name}:={value}"]
        self.command = command
        self.log_path = spec.log_path
        self._log = open(spec.log_path, "w") if spec.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def alive(self) -> bool:
        return self.process.poll() is None

    def failure(self) -> str:
        tail = ""
        if self.log_path and self.log_path.is_file():
            tail = "\n".join(self.log_path.read_text(errors="replace").splitlines()[-15:])
        return (f"the node exited with code {self.process.returncode} "
                f"(command: {' '.join(self.command)})" + (f"; its log {self.log_path} ends:\n{tail}" if tail else ""))

    def stop(self, timeout: float = 15.0) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self._log is not subprocess.DEVNULL:
            self._log.close()
