"""Free and used memory of every GPU, from `nvidia-smi`: TF-TRT shares the GPU's memory with TensorFlow, so a
conversion that runs out of it says how much there was."""

import os
import shutil
import subprocess


_NVIDIA_SMI_QUERY = ("--query-gpu=index,name,memory.total,memory.used,memory.free", "--format=csv,noheader,nounits")


def parse_nvidia_smi_memory(text):
  """`nvidia-smi --query-gpu=index,name,memory.total,memory.used,memory.free --format=csv,noheader,nounits`
  output -> [{"index", "name", "total_mb", "used_mb", "free_mb"}]. Pure; lines it cannot read are skipped."""
  gpus = []
  for line in text.splitlines():
    parts = [p.strip() for p in line.split(",")]
    if len(parts) != 5:
      continue
    try:
      index, total, used, free = int(parts[0]), int(parts[2]), int(parts[3]), int(parts[4])
    except ValueError:
      continue
    gpus.append({"index": index, "name": parts[1], "total_mb": total, "used_mb": used, "free_mb": free})
  return gpus


def query_gpu_memory(nvidia_smi="nvidia-smi", timeout=15):
  """Free and used memory of every GPU, from `nvidia-smi`; "unknown" (with why) where it cannot be asked.

  nvidia-smi ignores CUDA_VISIBLE_DEVICES: indices are physical, and the visible set is recorded beside them.
  """
  visible = os.environ.get("CUDA_VISIBLE_DEVICES")
  base = {"cuda_visible_devices": visible} if visible is not None else {}
  if nvidia_smi is None:
    return None
  command = shutil.which(nvidia_smi)
  if command is None:
    return dict(base, source="unknown", reason=f"{nvidia_smi} not found")
  try:
    done = subprocess.run([command, *_NVIDIA_SMI_QUERY], capture_output=True, text=True, timeout=timeout,
                          check=False)
  except (OSError, subprocess.SubprocessError) as err:
    return dict(base, source="unknown", reason=f"{nvidia_smi} failed: {type(err).__name__}: {err}")
  gpus = parse_nvidia_smi_memory(done.stdout)
  if done.returncode != 0 or not gpus:
    said = (done.stderr or done.stdout).strip().splitlines()
    return dict(base, source="unknown",
                reason=f"{nvidia_smi} exited {done.returncode}: {said[0] if said else 'no GPU listed'}")
  return dict(base, source="nvidia-smi", gpus=gpus)


def describe_gpu_memory(gpu_memory):
  """One line for the report: "GPU 0 (A100): 1200 of 40960 MiB free", or "unknown (why)"."""
  if not gpu_memory:
    return "not asked"
  if gpu_memory.get("source") != "nvidia-smi":
    return f"unknown ({gpu_memory.get('reason', 'no reason given')})"
  return "; ".join(f"GPU {g['index']} ({g['name']}): {g['free_mb']} of {g['total_mb']} MiB free"
                   for g in gpu_memory["gpus"])
