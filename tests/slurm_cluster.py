"""A throwaway one-node SLURM cluster for the tests that submit to a real scheduler.

Built the way a site runs one, scaled to this machine: munged for authentication, MariaDB
behind slurmdbd for accounting (submitit reads job states with `sacct`, which answers only
through slurmdbd), slurmctld and slurmd for the node `hostname -s` with `nproc` CPUs. Every
daemon runs from a temporary folder with its own ports, key, sockets and state, so nothing
under /etc is written and a cluster already running on the machine is left alone; the
commands find this cluster through `SLURM_CONF` (see `Cluster.env`).

Needs Debian's `slurm-wlm slurmdbd munge mariadb-server` (`.ci/run` installs them). Without
them the tests that use it are skipped, unless NAS_REQUIRE_SLURM=1 (as CI sets): then they
fail. `python -m tests.slurm_cluster` starts one and prints its environment, for trying
the README's cluster commands by hand (Ctrl-C stops it).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["Cluster", "SlurmUnavailable"]

MUNGE_SOCKET = Path("/run/munge/munge.socket.2")  # where SLURM's clients look
DAEMONS = ("munged", "mungekey", "mariadbd", "mariadb-install-db", "slurmdbd", "slurmctld", "slurmd",
           "sacctmgr")


class SlurmUnavailable(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _which(name: str) -> str:
    for folder in (os.environ.get("PATH", ""), "/usr/sbin:/usr/bin:/sbin"):
        found = shutil.which(name, path=folder)
        if found:
            return found
    raise SlurmUnavailable(f"{name} is not installed (apt-get install -y slurm-wlm slurmdbd munge "
                           "mariadb-server)")


def _wait(what: str, ready, timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.25)
    tail = log.read_text(errors="replace")[-800:] if log is not None and log.exists() else ""
    raise SlurmUnavailable(f"{what} did not come up within {timeout:.0f} s {tail}")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Cluster:
    """munged + MariaDB + slurmdbd + slurmctld + slurmd; `start()` returns the environment
    to run SLURM commands (and submitit) against it, `stop()` ends and removes everything."""

    cluster_name = "nas"
    partition = "cpu"

    def __init__(self, kill_wait: int = 10) -> None:
        if os.geteuid() != 0:
            raise SlurmUnavailable("the test cluster runs its daemons as root (SlurmUser=root)")
        self.bin = {name: _which(name) for name in DAEMONS}
        for user in ("munge", "mysql"):
            try:
                pwd.getpwnam(user)
            except KeyError:
                raise SlurmUnavailable(f"user {user!r} is missing (its Debian package makes it)") from None
        self.root = Path(tempfile.mkdtemp(prefix="nas-slurm-"))
        os.chmod(self.root, 0o755)
        self.host = socket.gethostname().split(".")[0]
        self.cpus = os.cpu_count() or 1
        self.kill_wait = kill_wait
        self.ports = {k: _free_port() for k in ("mysql", "dbd", "ctld", "slurmd")}
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = {**os.environ, "SLURM_CONF": str(self.root / "etc" / "slurm.conf")}

    # ----- the daemons ------------------------------------------------------------------
    def _spawn(self, name: str, cmd: list[str], user: str | None = None) -> None:
        if user:
            cmd = ["runuser", "-u", user, "--", *cmd]
        log = open(self.root / "log" / f"{name}.out", "w")  # noqa: SIM115 - the daemon's, closed at stop
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                            start_new_session=True)
        log.close()

    def _alive(self, name: str) -> None:
        p = self.procs[name]
        if p.poll() is not None:
            out = (self.root / "log" / f"{name}.out").read_text(errors="replace")[-800:]
            raise SlurmUnavailable(f"{name} exited with status {p.returncode}: {out}")

    def _munge(self) -> None:
        # SLURM's clients reach munged only at its compiled-in socket (sacctmgr ignores
        # AuthInfo), so the cluster uses the machine's munged when one answers there, and
        # otherwise starts one there with a key of its own.
        if self._munge_answers():
            return
        d = self.root / "munge"
        d.mkdir(mode=0o700)
        subprocess.run([self.bin["mungekey"], "-c", "-k", str(d / "munge.key")], check=True,
                       capture_output=True)
        MUNGE_SOCKET.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["chown", "-R", "munge:munge", str(d), str(MUNGE_SOCKET.parent)], check=True)
        os.chmod(d / "munge.key", 0o400)
        self._spawn("munged", [self.bin["munged"], "--foreground", "--force",
                               f"--key-file={d / 'munge.key'}", f"--socket={MUNGE_SOCKET}",
                               f"--pid-file={d / 'munged.pid'}", f"--log-file={d / 'munged.log'}",
                               f"--seed-file={d / 'munged.seed'}"], user="munge")
        _wait("munged", lambda: self._munge_answers() or self._alive("munged"), 30,
              self.root / "log" / "munged.out")

    def _munge_answers(self) -> bool:
        if not MUNGE_SOCKET.exists():
            return False
        r = subprocess.run(f"munge -n -S {MUNGE_SOCKET} | unmunge -S {MUNGE_SOCKET}", shell=True,
                           capture_output=True)
        return r.returncode == 0

    def _mariadb(self) -> None:
        d = self.root / "mysql"
        d.mkdir()
        shutil.chown(d, "mysql", "mysql")
        r = subprocess.run([self.bin["mariadb-install-db"], "--user=mysql", f"--datadir={d / 'data'}",
                            "--skip-test-db", "--auth-root-authentication-method=normal"],
                           capture_output=True, text=True)
        if r.returncode:
            raise SlurmUnavailable(f"mariadb-install-db failed: {(r.stdout + r.stderr)[-500:]}")
        self.mysql_socket = d / "mysqld.sock"
        self._spawn("mariadbd", [self.bin["mariadbd"], "--no-defaults", "--user=mysql",
                                 f"--datadir={d / 'data'}", f"--socket={self.mysql_socket}",
                                 f"--port={self.ports['mysql']}", "--bind-address=127.0.0.1",
                                 f"--pid-file={d / 'mysqld.pid'}", "--innodb-flush-log-at-trx-commit=0",
                                 "--skip-log-bin"])
        _wait("MariaDB", lambda: self.mysql_socket.exists() or self._alive("mariadbd"), 60,
              self.root / "log" / "mariadbd.out")
        sql = ("CREATE DATABASE slurm_acct_db; CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';"
               " GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;")
        deadline = time.monotonic() + 30
        while True:
            r = subprocess.run([shutil.which("mariadb") or "mariadb", f"--socket={self.mysql_socket}",
                                "-uroot", "-e", sql], capture_output=True, text=True)
            if r.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise SlurmUnavailable(f"MariaDB did not take the accounting database: {r.stderr[-300:]}")
            time.sleep(0.5)

    def _configs(self) -> None:
        etc, state = self.root / "etc", self.root / "state"
        etc.mkdir()
        (state / "spool").mkdir(parents=True)
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
        (etc / "slurm.conf").write_text("\n".join([
            f"ClusterName={self.cluster_name}",
            f"SlurmctldHost={self.host}(127.0.0.1)",
            f"SlurmctldPort={self.ports['ctld']}",
            f"SlurmdPort={self.ports['slurmd']}",
            # cred_expire also holds a requeued job back (120 s by default): short, for the tests.
            "AuthType=auth/munge", "AuthInfo=cred_expire=10", "CredType=cred/munge",
            "SlurmUser=root", "SlurmdUser=root",
            f"StateSaveLocation={state}", f"SlurmdSpoolDir={state / 'spool'}",
            f"SlurmctldPidFile={state / 'slurmctld.pid'}", f"SlurmdPidFile={state / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.root / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={self.root / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "MpiDefault=none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
            "SchedulerType=sched/backfill", "ReturnToService=2",
            f"KillWait={self.kill_wait}", "MinJobAge=600", "InactiveLimit=0",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/slurmdbd",
            "AccountingStorageHost=127.0.0.1", f"AccountingStoragePort={self.ports['dbd']}",
            f"NodeName={self.host} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={memory} State=UNKNOWN",
            f"PartitionName={self.partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
            ""]))
        dbd = etc / "slurmdbd.conf"
        dbd.write_text("\n".join([
            "AuthType=auth/munge", f"DbdHost={self.host}", "DbdAddr=127.0.0.1",
            f"DbdPort={self.ports['dbd']}",
            "SlurmUser=root", f"PidFile={state / 'slurmdbd.pid'}",
            f"LogFile={self.root / 'log' / 'slurmdbd.log'}",
            "StorageType=accounting_storage/mysql", "StorageHost=127.0.0.1",
            f"StoragePort={self.ports['mysql']}", "StorageUser=slurm", "StoragePass=slurm",
            "StorageLoc=slurm_acct_db", ""]))
        os.chmod(dbd, 0o600)  # slurmdbd refuses a readable file with a password in it

    def _run(self, *cmd: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(list(cmd), capture_output=True, text=True, env=self.env, timeout=timeout)

    def start(self) -> dict[str, str]:
        try:
            (self.root / "log").mkdir()
            self._munge()
            self._mariadb()
            self._configs()
            self._spawn("slurmdbd", [self.bin["slurmdbd"], "-D"])
            _wait("slurmdbd", lambda: _port_open(self.ports["dbd"]) or self._alive("slurmdbd"), 60,
                  self.root / "log" / "slurmdbd.log")
            r = self._run(self.bin["sacctmgr"], "-i", "add", "cluster", self.cluster_name)
            if r.returncode and "already exists" not in r.stdout + r.stderr:
                raise SlurmUnavailable(f"sacctmgr add cluster failed: {(r.stdout + r.stderr)[-300:]}")
            self._spawn("slurmctld", [self.bin["slurmctld"], "-D", "-i", "-f", self.env["SLURM_CONF"]])
            _wait("slurmctld", lambda: self._run("scontrol", "ping").returncode == 0
                  or self._alive("slurmctld"), 60, self.root / "log" / "slurmctld.log")
            self._spawn("slurmd", [self.bin["slurmd"], "-D", "-N", self.host, "-f", self.env["SLURM_CONF"]])
            _wait("the node to be idle", self._node_idle, 90, self.root / "log" / "slurmd.log")
            _wait("sacct", lambda: self._run("sacct", "-n", "-X").returncode == 0, 60,
                  self.root / "log" / "slurmdbd.log")
        except BaseException:
            self.stop()
            raise
        return self.env

    def _node_idle(self) -> bool:
        self._alive("slurmd")
        state = self._run("sinfo", "-h", "-n", self.host, "-o", "%T").stdout.strip()
        if state.startswith(("down", "drain")):
            self._run("scontrol", "update", f"nodename={self.host}", "state=resume")
        return state == "idle"

    def stop(self) -> None:
        if "slurmctld" in self.procs:
            self._run("scancel", "--full", "--quiet", f"--partition={self.partition}")
        for name in ("slurmd", "slurmctld", "slurmdbd", "mariadbd", "munged"):
            p = self.procs.pop(name, None)
            if p is None:
                continue
            if p.poll() is None:
                os.killpg(p.pid, 15)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, 9)
                    p.wait(5)
        # Steps of jobs still running when slurmd went away.
        subprocess.run(["pkill", "-9", "-f", f"slurmstepd.*{self.root}"], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)

    # ----- what the tests ask of it -------------------------------------------------------
    def jobs(self, job_id: str) -> dict[str, str]:
        """Each array task's (or the job's) state as sacct reports it, by SLURM job id."""
        r = self._run("sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", job_id)
        return dict(line.split("|", 1) for line in r.stdout.splitlines() if "|" in line)


if __name__ == "__main__":
    cluster = Cluster()
    env = cluster.start()
    print(f"export SLURM_CONF={env['SLURM_CONF']}   # partition {cluster.partition}; Ctrl-C stops it",
          flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
