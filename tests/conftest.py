import os

import torch

# The test models are tiny: one thread avoids oversubscribing small machines (CI has 2 cores),
# where several threads per tiny op cost far more than they gain.
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)
