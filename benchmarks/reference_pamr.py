"""The reference PAMR of Araslanov & Roth (CVPR 2020), as in github.com/visinf/1-stage-wseg
(``models/mods/pamr.py``): conv-based, one ``[B, K, 8 * len(dilations), H, W]`` tensor of
neighbours per iteration. Slow but plain: ``bench_pamr.py`` times :class:`harness.eps.pamr.PAMR`'s
paths against it, and tests (``tests/eps``) compare PAMR and the components that use it with it."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class LocalAffinity(nn.Module):

    def __init__(self, dilations=(1, )):
        super().__init__()
        self.dilations = dilations
        self.register_buffer('kernel', self._init_aff())

    def _init_aff(self):
        weight = torch.zeros(8, 1, 3, 3)
        for i in range(weight.size(0)):
            weight[i, 0, 1, 1] = 1
        weight[0, 0, 0, 0] = -1
        weight[1, 0, 0, 1] = -1
        weight[2, 0, 0, 2] = -1
        weight[3, 0, 1, 0] = -1
        weight[4, 0, 1, 2] = -1
        weight[5, 0, 2, 0] = -1
        weight[6, 0, 2, 1] = -1
        weight[7, 0, 2, 2] = -1
        return weight

    def forward(self, x):
        B, K, H, W = x.size()
        x = x.view(B * K, 1, H, W)
        x_affs = []
        for d in self.dilations:
            x_pad = F.pad(x, [d] * 4, mode='replicate')
            x_affs.append(F.conv2d(x_pad, self.kernel, dilation=d))
        return torch.cat(x_affs, 1).view(B, K, -1, H, W)


class LocalAffinityCopy(LocalAffinity):

    def _init_aff(self):
        weight = torch.zeros(8, 1, 3, 3)
        weight[0, 0, 0, 0] = 1
        weight[1, 0, 0, 1] = 1
        weight[2, 0, 0, 2] = 1
        weight[3, 0, 1, 0] = 1
        weight[4, 0, 1, 2] = 1
        weight[5, 0, 2, 0] = 1
        weight[6, 0, 2, 1] = 1
        weight[7, 0, 2, 2] = 1
        return weight


class LocalStDev(LocalAffinity):

    def _init_aff(self):
        weight = torch.zeros(9, 1, 3, 3)
        weight[0, 0, 0, 0] = 1
        weight[1, 0, 0, 1] = 1
        weight[2, 0, 0, 2] = 1
        weight[3, 0, 1, 0] = 1
        weight[4, 0, 1, 1] = 1
        weight[5, 0, 1, 2] = 1
        weight[6, 0, 2, 0] = 1
        weight[7, 0, 2, 1] = 1
        weight[8, 0, 2, 2] = 1
        return weight

    def forward(self, x):
        return super().forward(x).std(2, keepdim=True)


class LocalAffinityAbs(LocalAffinity):

    def forward(self, x):
        return torch.abs(super().forward(x))


class ReferencePAMR(nn.Module):

    def __init__(self, num_iter=1, dilations=(1, )):
        super().__init__()
        self.num_iter = num_iter
        self.aff_x = LocalAffinityAbs(dilations)
        self.aff_m = LocalAffinityCopy(dilations)
        self.aff_std = LocalStDev(dilations)

    def forward(self, x, mask):
        mask = F.interpolate(mask, size=x.size()[-2:], mode='bilinear', align_corners=True)
        x_std = self.aff_std(x)
        x = -self.aff_x(x) / (1e-8 + 0.1 * x_std)
        x = x.mean(1, keepdim=True)
        x = F.softmax(x, 2)
        for _ in range(self.num_iter):
            m = self.aff_m(mask)
            mask = (m * x).sum(2)
        return mask
