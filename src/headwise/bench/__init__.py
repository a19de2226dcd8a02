"""Benchmarks of headwise against what users would otherwise pick; the code behind `headwise bench`,
benchmarks/speed.py and benchmarks/memory.py.

    grid.py         Config (one point: dtype, pass, mask, N, B, H, Dh), the grid, the FLOP formulas
    contenders.py   headwise (auto and every backend, MultiHeadAttention) and its peers (torch SDPA, its
                    math kernel, a naive implementation, torch.nn.MultiheadAttention), their inputs and steps
    measure.py      interleaved timing, peak memory, the memory guard, the matmul ceiling, the machine
    speed.py        the speed benchmark and its options
    memory.py       the memory benchmark: one fresh process per configuration
    report.py       markdown, JSON and PNG
    options.py      command-line options shared by both; console.py: the progress bar
"""
