//! [`Conv2dGeom`]: the shapes, padding, stride, dilation and groups of one convolution, and
//! the output-size arithmetic (PyTorch and TensorFlow `SAME`).

/// The shapes and hyper-parameters of one convolution: PyTorch `nn.Conv2d` semantics with zero
/// padding and `groups` (default 1). Padding may differ before and after an axis (PyTorch / Keras
/// `"same"` with an even kernel, and TensorFlow `"SAME"` with a stride, pad one more row/column
/// at the bottom/right).
///
/// With `groups = G`, input channels `[g·C/G, (g+1)·C/G)` feed only output channels
/// `[g·O/G, (g+1)·O/G)` and the weight is `[O, C/G, kh, kw]`; `G = C = O` is a depthwise
/// convolution, which runs on a direct kernel ([`crate::ops::depthwise`]) instead of im2col.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dGeom {
    /// Input channels `C`.
    pub c: usize,
    /// Input height `H`.
    pub h: usize,
    /// Input width `W`.
    pub w: usize,
    /// Output channels `O`.
    pub o: usize,
    /// Kernel height `kh`.
    pub kh: usize,
    /// Kernel width `kw`.
    pub kw: usize,
    /// Vertical stride `sh`.
    pub sh: usize,
    /// Horizontal stride `sw`.
    pub sw: usize,
    /// Zero rows added at the top, `ph`.
    pub ph: usize,
    /// Zero rows added at the bottom (equal to `ph` except for `"same"` with an even kernel).
    pub ph_end: usize,
    /// Zero columns added on the left, `pw`.
    pub pw: usize,
    /// Zero columns added on the right (equal to `pw` except for `"same"` with an even kernel).
    pub pw_end: usize,
    /// Vertical dilation `dh`.
    pub dh: usize,
    /// Horizontal dilation `dw`.
    pub dw: usize,
    /// Channel groups `G` (1: a dense convolution); `G` divides `C` and `O`.
    pub groups: usize,
}

/// PyTorch's convolution output length `⌊(size + 2p − d(k−1) − 1)/s⌋ + 1`, or `None` when the
/// dilated kernel does not fit in the padded input (or `k`, `s` or `d` is 0).
pub fn conv_out_len(size: usize, k: usize, s: usize, p: usize, d: usize) -> Option<usize> {
    conv_out_len_padded(size + 2 * p, k, s, d)
}

/// TensorFlow `"SAME"` padding `(before, after)` of an axis of `n` elements for a kernel `k`,
/// stride `s` and dilation `d`: `out = ⌈n/s⌉`, `total = max((out − 1)·s + d·(k − 1) + 1 − n, 0)`,
/// `before = ⌊total/2⌋`, `after = total − before` (timm's `get_same_padding`).
pub fn tf_same_pads(n: usize, k: usize, s: usize, d: usize) -> (usize, usize) {
    let s = s.max(1);
    let out = n.div_ceil(s);
    let span = d * k.saturating_sub(1) + 1;
    let total = ((out.saturating_sub(1)) * s + span).saturating_sub(n);
    (total / 2, total - total / 2)
}

/// The output length for an axis of `padded = size + pad_before + pad_after` elements.
pub(crate) fn conv_out_len_padded(padded: usize, k: usize, s: usize, d: usize) -> Option<usize> {
    if k == 0 || s == 0 || d == 0 {
        return None;
    }
    let span = d * (k - 1) + 1;
    (padded >= span).then(|| (padded - span) / s + 1)
}

/// Largest patch matrix unfolded at once, in floats (1 MiB). Larger images are unfolded in bands
/// of output rows. The seed CNN's layers fit whole: measured, whole-image products beat bands of
/// ~128 KiB by 10–20 % on them.
pub const TILE_FLOATS: usize = 256 * 1024;

impl Conv2dGeom {
    /// A `kh × kw` convolution of `(C, H, W)` inputs into `O` channels, stride 1, no padding,
    /// dilation 1 (change them with the `with_*` methods).
    pub fn new(c: usize, h: usize, w: usize, o: usize, kh: usize, kw: usize) -> Self {
        Conv2dGeom {
            c,
            h,
            w,
            o,
            kh,
            kw,
            sh: 1,
            sw: 1,
            ph: 0,
            ph_end: 0,
            pw: 0,
            pw_end: 0,
            dh: 1,
            dw: 1,
            groups: 1,
        }
    }

    /// With `groups` channel groups (`groups` must divide `C` and `O`).
    pub fn with_groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }

    /// TensorFlow `"SAME"` padding for the current input size, stride and dilation: per axis
    /// `out = ⌈n/s⌉`, `total = max((out − 1)·s + d·(k − 1) + 1 − n, 0)`, `before = ⌊total/2⌋`,
    /// the rest after (the odd extra row/column goes to the bottom/right).
    pub fn with_tf_same_padding(self) -> Self {
        let (rows, cols) = (
            tf_same_pads(self.h, self.kh, self.sh, self.dh),
            tf_same_pads(self.w, self.kw, self.sw, self.dw),
        );
        self.with_padding_asym(rows, cols)
    }

    /// Whether this is a depthwise convolution (`G = C = O`), run by the direct kernel.
    pub fn is_depthwise(&self) -> bool {
        self.groups > 1 && self.groups == self.c && self.groups == self.o
    }

    /// Whether this is a 1×1, stride-1, unpadded dense convolution: a plain GEMM per image on
    /// the input as it is (no unfolding).
    pub fn is_pointwise(&self) -> bool {
        self.groups == 1
            && (self.kh, self.kw, self.sh, self.sw) == (1, 1, 1, 1)
            && (self.ph, self.ph_end, self.pw, self.pw_end) == (0, 0, 0, 0)
    }

    /// Channels per group `(C/G, O/G)`.
    pub fn group_channels(&self) -> (usize, usize) {
        let g = self.groups.max(1);
        (self.c / g, self.o / g)
    }

    /// With strides `(sh, sw)`.
    pub fn with_stride(mut self, sh: usize, sw: usize) -> Self {
        (self.sh, self.sw) = (sh, sw);
        self
    }

    /// With symmetric zero padding: `ph` rows at the top and bottom, `pw` columns left and right.
    pub fn with_padding(self, ph: usize, pw: usize) -> Self {
        self.with_padding_asym((ph, ph), (pw, pw))
    }

    /// With `(top, bottom)` rows and `(left, right)` columns of zero padding.
    pub fn with_padding_asym(mut self, rows: (usize, usize), cols: (usize, usize)) -> Self {
        (self.ph, self.ph_end) = rows;
        (self.pw, self.pw_end) = cols;
        self
    }

    /// With dilations `(dh, dw)`.
    pub fn with_dilation(mut self, dh: usize, dw: usize) -> Self {
        (self.dh, self.dw) = (dh, dw);
        self
    }

    /// Output height and width `(OH, OW)`, or `None` when the dilated kernel does not fit in the
    /// padded input or a kernel size, stride or dilation is 0.
    pub fn try_out_hw(&self) -> Option<(usize, usize)> {
        Some((
            conv_out_len_padded(self.h + self.ph + self.ph_end, self.kh, self.sh, self.dh)?,
            conv_out_len_padded(self.w + self.pw + self.pw_end, self.kw, self.sw, self.dw)?,
        ))
    }

    /// Output height and width `(OH, OW)`.
    ///
    /// # Panics
    /// When the kernel does not fit ([`Conv2dGeom::try_out_hw`] is `None`; layers check this at
    /// build time).
    pub fn out_hw(&self) -> (usize, usize) {
        self.try_out_hw()
            .unwrap_or_else(|| panic!("conv2d: the kernel does not fit the input: {self:?}"))
    }

    /// Rows of the unfolded patch matrix of one group: `(C/G)·kh·kw` (the reduction length of the
    /// forward GEMM, and PyTorch's fan-in).
    pub fn k_len(&self) -> usize {
        self.group_channels().0 * self.kh * self.kw
    }

    /// Forward FLOPs for `n` images, 2 per multiply-add: `2·N·O·OH·OW·C·kh·kw`. A backward with
    /// the input gradient costs twice that, without it (first layer) once.
    pub fn forward_flops(&self, n: usize) -> f64 {
        let (oh, ow) = self.out_hw();
        2.0 * (n * self.o * oh * ow) as f64 * self.k_len() as f64
    }

    /// For kernel column `v` (rows unfolding): the output columns `[j0, j1)` whose input column
    /// `j·sw + v·dw − pw` lies inside `[0, W)`, and the input column of `j0`.
    pub(crate) fn valid_cols(&self, v: usize, ow: usize) -> (usize, usize, usize) {
        let off = (v * self.dw) as isize - self.pw as isize;
        let s = self.sw as isize;
        // smallest j with j·s + off ≥ 0, and smallest j with j·s + off ≥ W
        let j0 = if off >= 0 {
            0
        } else {
            ((-off + s - 1) / s) as usize
        };
        let lim = self.w as isize - off;
        let j1 = if lim <= 0 {
            0
        } else {
            ((lim + s - 1) / s) as usize
        };
        let j0 = j0.min(ow);
        let j1 = j1.clamp(j0, ow);
        (j0, j1, (j0 as isize * s + off).max(0) as usize)
    }
}
