"""PyTorch baseline on the same GPU: a ResNet152V2-shaped pre-activation network, f32, eval mode.

torchvision has no V2 ResNet; this builds the same layer shapes (blocks 3/8/36/3, stride on the
last block of stacks 2-4, pre-activation BN+ReLU) so that FLOPs and memory traffic match.
"""
import time, statistics
import torch
import torch.nn as nn

class Block(nn.Module):
    def __init__(self, cin, f, stride, first):
        super().__init__()
        self.pre = nn.BatchNorm2d(cin, eps=1.001e-5)
        self.proj = nn.Conv2d(cin, 4 * f, 1) if first else None
        self.stride = stride
        self.c1 = nn.Conv2d(cin, f, 1, bias=False); self.b1 = nn.BatchNorm2d(f, eps=1.001e-5)
        self.c2 = nn.Conv2d(f, f, 3, stride, 1, bias=False); self.b2 = nn.BatchNorm2d(f, eps=1.001e-5)
        self.c3 = nn.Conv2d(f, 4 * f, 1)
    def forward(self, x):
        p = torch.relu(self.pre(x))
        s = self.proj(p) if self.proj is not None else (x[:, :, ::2, ::2] if self.stride > 1 else x)
        t = torch.relu(self.b1(self.c1(p)))
        t = torch.relu(self.b2(self.c2(t)))
        return s + self.c3(t)

def net():
    layers = [nn.Conv2d(3, 64, 7, 2, 3), nn.ZeroPad2d(1), nn.MaxPool2d(3, 2)]
    cin = 64
    for i, (n, f) in enumerate(zip([3, 8, 36, 3], [64, 128, 256, 512])):
        for b in range(n):
            stride = 2 if (b == n - 1 and i < 3) else 1
            layers.append(Block(cin, f, stride, b == 0)); cin = 4 * f
    layers += [nn.BatchNorm2d(cin, eps=1.001e-5), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers)

torch.backends.cudnn.benchmark = True
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
m = net().cuda().eval()
for batch in (1, 8):
    x = torch.randn(batch, 3, 224, 224, device="cuda")
    with torch.no_grad():
        for _ in range(5): m(x)
        torch.cuda.synchronize()
        times = []
        for _ in range(30):
            t = time.perf_counter(); m(x); torch.cuda.synchronize(); times.append(time.perf_counter() - t)
    print(f"torch {torch.__version__} eager f32 (no TF32) batch {batch}: median {statistics.median(times)*1e3:.2f} ms")
