"""Object renderer shared by PVS and confounders.

Every small structure (PVS tube, sulcus, lacune, WMH, hyperintense focus) is rendered on the fine
simulation grid inside its own bounding box only -- the fine grid is never allocated as a whole, which
keeps the realistic profile under a few GiB. The bounding box is aligned to output voxels, so the fine
volume fractions are slice-profile averaged straight into the output grid (partial volume).

Accumulated output-grid quantities:
- `pvs_frac` / `conf_frac`: volume fraction of PVS / of confounders in each voxel,
- `pvs_sig` / `conf_sig`: sum over the voxel of fraction x intrinsic intensity.
PVS never share a voxel with a confounder or with another PVS (PVSDRO places PVS without overlap), so
the label (PVS fraction >= threshold) can by construction never sit on a confounder.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .acquisition import Grid, Profile


@dataclass
class Scene:
    grid: Grid
    profile: Profile
    codes: np.ndarray  # tissue codes on the output grid
    pvs_frac: np.ndarray = field(init=False)
    pvs_sig: np.ndarray = field(init=False)
    conf_frac: np.ndarray = field(init=False)
    conf_sig: np.ndarray = field(init=False)
    # hard profile only (None otherwise): owner of each PVS voxel (1 + render order) and confounder-type bits
    track: bool = False
    pvs_id: np.ndarray | None = field(init=False, default=None)
    conf_bits: np.ndarray | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        shp = self.grid.shape
        self.pvs_frac = np.zeros(shp, np.float32)
        self.pvs_sig = np.zeros(shp, np.float32)
        self.conf_frac = np.zeros(shp, np.float32)
        self.conf_sig = np.zeros(shp, np.float32)
        w = np.asarray(self.profile.slice_profile, dtype=np.float64)
        self._zw = (w / w.sum()).astype(np.float32)
        self._edge = float(np.mean(self.profile.fine_spacing_zyx))
        self.n_pvs = 0
        if self.track:
            self.pvs_id = np.zeros(shp, np.int32)
            self.conf_bits = np.zeros(shp, np.uint8)

    def code_at(self, pts: np.ndarray) -> np.ndarray:
        """Tissue code of the output voxel containing each point (N, 3); 255 outside the grid."""
        idx = self.grid.index_of(np.atleast_2d(pts))
        ok = np.all((idx >= 0) & (idx < np.array(self.grid.shape)), axis=1)
        out = np.full(len(idx), 255, dtype=np.uint8)
        out[ok] = self.codes[idx[ok, 0], idx[ok, 1], idx[ok, 2]]
        return out

    def occupied(self, pts: np.ndarray, pvs_only: bool = False) -> bool:
        """True if any output voxel containing one of the points already holds a PVS or confounder
        (`pvs_only`: a PVS)."""
        idx = self.grid.index_of(np.atleast_2d(pts))
        idx = idx[np.all((idx >= 0) & (idx < np.array(self.grid.shape)), axis=1)]
        if not len(idx):
            return False
        i, j, k = idx.T
        return bool(np.any(self.pvs_frac[i, j, k] > 0) or (not pvs_only and np.any(self.conf_frac[i, j, k] > 0)))

    # ----------------------------------------------------------------------------------------------
    def _fine_box(self, lo_mm: np.ndarray, hi_mm: np.ndarray):
        g, p = self.grid, self.profile
        sp = np.asarray(g.spacing)
        i0 = np.maximum(np.floor((lo_mm - g.origin) / sp + 0.5).astype(int), 0)
        i1 = np.minimum(np.floor((hi_mm - g.origin) / sp + 0.5).astype(int) + 1, np.array(g.shape))
        if np.any(i1 <= i0):
            return None
        sub = (p.z_sub, p.inplane_os, p.inplane_os)
        axes = []
        for a in range(3):
            c = g.origin[a] + np.arange(i0[a], i1[a]) * sp[a]
            off = (np.arange(sub[a]) + 0.5) / sub[a] * sp[a] - sp[a] / 2
            axes.append((c[:, None] + off[None, :]).ravel())
        return i0, i1, axes

    def _reduce(self, fine: np.ndarray, i0, i1) -> np.ndarray:
        p = self.profile
        nz, ny, nx = (i1 - i0)
        r = fine.reshape(nz, p.z_sub, ny, p.inplane_os, nx, p.inplane_os)
        return np.tensordot(r, self._zw, axes=([1], [0])).mean(axis=(2, 4), dtype=np.float32)

    def render(self, kind: str, lo_mm: np.ndarray, hi_mm: np.ndarray, field_fn, check_free: bool,
               overlap_confounders: bool = False) -> bool:
        """Renders one object; `field_fn(z, y, x) -> (fraction, intensity)` on broadcastable fine axes.

        `kind`: "pvs" or the confounder kind. `check_free`: refuse (return False) if the object would share
        an output voxel with any PVS or confounder already placed (`overlap_confounders`: with a PVS only;
        the hard profile's PVS that touch a WMH or lacune). PVS use it; confounders may overlap one another.
        """
        box = self._fine_box(lo_mm, hi_mm)
        if box is None:
            return False
        i0, i1, (zz, yy, xx) = box
        frac, value = field_fn(zz[:, None, None], yy[None, :, None], xx[None, None, :])
        if not np.any(frac > 0):
            return False
        f = self._reduce(frac.astype(np.float32), i0, i1)
        s = self._reduce((frac * value).astype(np.float32), i0, i1)
        sl = tuple(slice(a, b) for a, b in zip(i0, i1))
        touched = f > 1e-4
        if check_free:
            busy = self.pvs_frac[sl] > 0
            if not overlap_confounders:
                busy = busy | (self.conf_frac[sl] > 0)
            if np.any(touched & busy):
                return False
        if kind == "pvs":
            self.pvs_frac[sl] += np.where(touched, f, 0)
            self.pvs_sig[sl] += np.where(touched, s, 0)
            self.n_pvs += 1
            if self.pvs_id is not None:
                self.pvs_id[sl][touched] = self.n_pvs
        else:
            if self.conf_bits is not None:
                from .hard import CONFOUNDER_BITS, KIND_TO_TYPE, MAP_FRACTION
                bit = CONFOUNDER_BITS[KIND_TO_TYPE[kind]]
                self.conf_bits[sl] |= np.where(f >= MAP_FRACTION, bit, 0).astype(np.uint8)
            # confounders may overlap: keep fractions <= 1 and the mean intensity of what is there
            cf, cs = self.conf_frac[sl], self.conf_sig[sl]
            new_f = np.minimum(cf + f, 1.0)
            scale = np.where(cf + f > 1.0, new_f / np.maximum(cf + f, 1e-6), 1.0)
            self.conf_frac[sl] = np.where(touched, new_f, cf)
            self.conf_sig[sl] = np.where(touched, (cs + s) * scale, cs)
        return True

    # ----------------------------------------------------------------------------------------------
    def tube_field(self, pts: np.ndarray, radius: float, ctrl: np.ndarray, base: float, top: float,
                   edge: float | None = None):
        """Field of a tube of `radius` around polyline `pts` (K, 3); intensity base + ctrl(t) * (top - base)
        with `ctrl` sampled at equidistant positions along the course (t in 0..1)."""
        seg_a = pts[:-1]
        seg_d = pts[1:] - pts[:-1]
        seg_len = np.linalg.norm(seg_d, axis=1)
        cum = np.concatenate([[0.0], np.cumsum(seg_len)])
        total = max(cum[-1], 1e-6)
        h = self._edge if edge is None else edge
        tc = np.linspace(0, 1, len(ctrl))

        def fn(z, y, x):
            best_d = None
            best_t = None
            for a, d, ln, c0 in zip(seg_a, seg_d, seg_len, cum[:-1]):
                pz, py, px = z - a[0], y - a[1], x - a[2]
                t = np.clip((pz * d[0] + py * d[1] + px * d[2]) / max(ln * ln, 1e-9), 0, 1)
                dist = np.sqrt((pz - t * d[0]) ** 2 + (py - t * d[1]) ** 2 + (px - t * d[2]) ** 2)
                tg = (c0 + t * ln) / total
                if best_d is None:
                    best_d, best_t = dist, tg
                else:
                    closer = dist < best_d
                    best_d = np.where(closer, dist, best_d)
                    best_t = np.where(closer, tg, best_t)
            frac = np.clip((radius - best_d) / h + 0.5, 0, 1)
            value = base + np.interp(best_t, tc, ctrl) * (top - base)
            return frac, value

        return fn

    def ellipsoid_field(self, centre: np.ndarray, axes: np.ndarray, semi: np.ndarray, value: float,
                        edge: float | None = None):
        """Field of an ellipsoid (`axes` rows = unit axes, `semi` = semi-axis lengths in mm)."""
        h = self._edge if edge is None else edge
        rmin = float(np.min(semi))

        def fn(z, y, x):
            pz, py, px = z - centre[0], y - centre[1], x - centre[2]
            q = 0
            for ax, s in zip(axes, semi):
                q = q + ((pz * ax[0] + py * ax[1] + px * ax[2]) / s) ** 2
            sdf = (np.sqrt(q) - 1.0) * rmin  # approximate signed distance (exact for spheres)
            frac = np.clip(-sdf / h + 0.5, 0, 1)
            return frac, np.full(np.broadcast_shapes(z.shape, y.shape, x.shape), value, np.float32)

        return fn


def random_unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.standard_normal(3)
    return v / np.linalg.norm(v)


def bend_polyline(start: np.ndarray, direction: np.ndarray, length: float, n_seg: int, bend_deg: float,
                  rng: np.random.Generator) -> np.ndarray:
    """Slightly tortuous polyline of `n_seg` segments starting at `start` along `direction`."""
    pts = [np.asarray(start, dtype=np.float64)]
    d = direction / np.linalg.norm(direction)
    for _ in range(n_seg):
        perp = random_unit(rng)
        perp -= perp.dot(d) * d
        perp /= max(np.linalg.norm(perp), 1e-9)
        ang = np.deg2rad(rng.normal(0, bend_deg))
        d = np.cos(ang) * d + np.sin(ang) * perp
        d /= np.linalg.norm(d)
        pts.append(pts[-1] + d * length / n_seg)
    return np.array(pts)
