"""Drawing the sampled anatomy onto a voxel grid, and finishing the image like a scanner.

The anatomy is drawn on an RAS-aligned render grid (cheap separable coordinates), stage by
stage, later stages overwriting earlier ones; the result is then mapped onto the storage
grid and finished (global contrast change, partial-volume blur, noise, reconstruction
circle).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from .anatomy import Anatomy, Finish, _diaphragm_height, _wave
from .geometry import StorageGrid, _axis_distance2, _Grid, _rotation
from .noise import _F_BOWEL, _F_DEF, _F_GAS, _F_HET, _F_VES_A, _F_VES_B, _NoiseBank


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _take(arr, mask):
    """Values of a (possibly broadcast) array at the True voxels of mask."""
    return np.broadcast_to(arr, mask.shape)[mask]


def _render(A: Anatomy, grid: _Grid, bank: _NoiseBank):
    """(HU image, labels) of the anatomy on the (RAS-aligned) grid, before finishing."""
    r = _Renderer(A, grid, bank)
    r.body()
    r.muscles()
    r.lungs()
    r.heart_stomach()
    r.liver_spleen()
    r.kidneys()
    r.vessels_gb()
    r.spine()
    r.ribs_pelvis()
    return r.img, r.lab



# --------------------------------------------------------------------------- renderer


class _Renderer:
    """Draws the anatomy stage by stage; ``img`` (HU) and ``lab`` hold the result.  The
    ``body`` stage comes first: it computes the body-wall distance fields (``d``,
    ``wall_in``, ``ux``, ``uy``) and the height above the diaphragm (``zrel``) that later
    stages clip their organs with."""

    def __init__(self, A: Anatomy, grid: _Grid, bank: _NoiseBank):
        self.A, self.g, self.bank = A, grid, bank
        self.img = np.full(grid.shape, -1000.0, dtype=np.float32)
        self.lab = np.zeros(grid.shape, dtype=np.uint8)

    # ---------------------------------------------------------------- utilities
    def put(self, sl, mask, hu=None, label=None):
        if hu is not None:
            sub = self.img[sl]
            if np.ndim(hu) == 0 or np.shape(hu) == (int(mask.sum()),):
                sub[mask] = hu
            else:
                sub[mask] = _take(hu, mask)
        if label is not None:
            self.lab[sl][mask] = label

    def spine_xy(self, z):
        return self.A.spine.centre_xy(z)

    def z_dia(self, x, y):
        return _diaphragm_height(self.A.diaphragm, self.A.body, x, y)

    def field(self, idx, sl, offset=(0.0, 0.0, 0.0)):
        """Smooth random field ``idx`` (shifted by ``offset`` mm) evaluated on the block ``sl``."""
        return self.bank.block(idx, self.g.axes_mm(sl), offset)

    def het(self, mask, sl, k, amp):
        return np.float32(amp) * self.field(_F_HET, sl, self.A.offsets[k % len(self.A.offsets)])[mask]

    def blob(self, sl, X, Y, Z, c, R, r, deform, off):
        """Deformed ellipsoid: returns (mask, normalised radius on the mask)."""
        dx, dy, dz = X - np.float32(c[0]), Y - np.float32(c[1]), Z - np.float32(c[2])
        Rt = np.asarray(R, dtype=np.float32)
        u = (Rt[0, 0] * dx + Rt[1, 0] * dy + Rt[2, 0] * dz) / np.float32(r[0])
        v = (Rt[0, 1] * dx + Rt[1, 1] * dy + Rt[2, 1] * dz) / np.float32(r[1])
        w = (Rt[0, 2] * dx + Rt[1, 2] * dy + Rt[2, 2] * dz) / np.float32(r[2])
        q = np.sqrt(u * u + v * v + w * w)
        q += np.float32(deform) * self.field(_F_DEF, sl, off if off is not None else (0.0, 0.0, 0.0))
        mask = q < 1.0
        return mask, q[mask]

    def block(self, lo, hi):
        sl = self.g.box(lo, hi)
        if sl is None:
            return None, (None, None, None)
        return sl, self.g.coords(sl)

    # ---------------------------------------------------------------- stages
    def body(self):
        A, H, g = self.A, self.A.hu, self.g
        B = A.body
        X, Y, Z = g.coords(g.full)
        az = B.a0 * (1.0 + _wave(B.a_w, Z) + B.pelvis_widen * _sigmoid((-260.0 - Z) / 40.0))
        bz = B.b0 * (1.0 + _wave(B.b_w, Z))
        cyz = _wave(B.cy_w, Z)
        dy = Y - cyz
        xn = X / az
        yn = dy / bz
        p = np.float32(B.p_body)
        rho = np.abs(xn) ** p + np.abs(yn) ** p  # 3-D from here on
        np.power(rho, np.float32(1.0 / p), out=rho)
        np.maximum(rho, np.float32(1e-3), out=rho)
        inv = np.divide(np.float32(1.0), rho, out=rho)  # rho is not needed any more
        r = X * X + dy * dy
        np.sqrt(r, out=r)
        d = r * inv
        d -= r
        del r
        np.minimum(d, Y - np.float32(B.y_flat), out=d)
        ux = xn * inv  # unit-superellipse direction of each voxel
        uy = yn * inv
        del inv
        uyn = np.minimum(uy, np.float32(0.0))
        uyn *= uyn
        uyp = np.maximum(uy, np.float32(0.0))
        uyp *= uyp
        fat_t = ux * ux
        fat_t *= np.float32(B.f_lat)
        fat_t += np.float32(B.f_ant) * uyp
        fat_t += np.float32(B.f_post) * uyn
        fat_t *= 1.0 + _wave(B.fat_w, Z)
        wall_in = d - fat_t
        wall_in -= np.float32(B.mus)
        wall_in -= np.float32(B.mus_post) * uyn
        del uyn, uyp
        self.d, self.wall_in, self.ux, self.uy = d, wall_in, ux, uy

        zrel = (Z - self.z_dia(X, Y)).astype(np.float32, copy=False)
        self.zrel = np.broadcast_to(zrel, d.shape)

        img = self.img
        body = d > 0
        img[body] = H.skin
        img[d > 2.5] = H.fat
        img[(d > fat_t) & (wall_in <= 0)] = H.muscle
        inter = wall_in > 0
        thor = inter & (self.zrel > 0)
        abd = inter & ~thor
        img[thor] = H.fat + 10.0
        # abdominal content: bowel loops / mesenteric fat / gas / oral contrast
        F = self.field(_F_BOWEL, g.full)[abd]
        G = self.field(_F_GAS, g.full)[abd]
        va = self.field(_F_VES_A, g.full)[abd]
        vb = self.field(_F_VES_B, g.full)[abd]
        thr = np.float32(A.bowel.thr)
        frac = np.clip((F - thr) * 4.0 + 0.5, 0.0, 1.0)
        # bowel loops: enhancing wall near the loop boundary, slightly lower lumen content
        wall = np.exp(-(((F - thr - 0.3) / 0.15) ** 2))
        lumen = np.float32(H.bowel - 10.0) + np.float32(H.bowel_wall - H.bowel + 10.0) * wall
        hu = H.fat + (lumen - H.fat) * frac
        # small mesenteric vessels in the fat
        ves = np.clip(1.0 - np.sqrt(va * va + vb * vb) / 0.22, 0.0, 1.0) * (1.0 - frac)
        hu += (np.float32(H.blood * 0.7) - hu) * ves
        gas = np.clip((G - np.float32(A.bowel.gas_thr)) * 5.0, 0.0, 1.0) * np.clip((F - A.bowel.thr) * 3.0, 0.0, 1.0)
        hu = hu + (-950.0 - hu) * gas
        if A.bowel.oral:
            oral = np.clip((-G - np.float32(A.bowel.oral_thr)) * 5.0, 0.0, 1.0) * frac
            hu = hu + (H.oral - hu) * oral
        img[abd] = hu
        # diaphragm muscle band
        img[inter & (np.abs(self.zrel) < 3.0)] = H.muscle
        # table
        if A.table.present:
            yt = np.float32(B.y_flat - 1.5) - np.float32(A.table.curvature) * X * X
            tb = (Y < yt) & (Y > yt - np.float32(A.table.thickness))
            tb = np.broadcast_to(tb, d.shape) & ~body
            shell = tb & ((Y > yt - 3.0) | (Y < yt - np.float32(A.table.thickness) + 3.0))
            img[tb] = H.table_core
            img[shell] = A.table.shell_hu

    def muscles(self):
        A, H = self.A, self.A.hu
        B, S, M = A.body, A.spine, A.muscles
        # paraspinal (erector spinae) muscles
        ylo = B.y_flat + B.f_post - 5.0
        sl, (X, Y, Z) = self.block((-M.para_x - M.para_rx - 5, ylo, -1e4), (M.para_x + M.para_rx + 5, S.ys0 + 40, 1e4))
        if sl is not None:
            xs, ys = self.spine_xy(Z)
            ytop = ys - S.rby0 - 4.0
            ybot = np.float32(B.y_flat + B.f_post + 2.0)
            cy = 0.5 * (ytop + ybot)
            ry = 0.5 * (ytop - ybot) + 4.0
            m = np.zeros(np.broadcast_shapes(X.shape, Y.shape, Z.shape), dtype=bool)
            for s in (-1.0, 1.0):
                q = ((X - xs - s * M.para_x) / M.para_rx) ** 2 + ((Y - cy) / ry) ** 2
                m |= q < 1.0
            m &= self.d[sl] > 3.0
            self.put(sl, m, H.muscle + self.het(m, sl, 0, 8.0))
        # psoas muscles (grow caudally from the T12 level)
        sl, (X, Y, Z) = self.block((-120, S.ys0 - 60, -1e4), (120, S.ys0 + 60, -40))
        if sl is not None:
            xs, ys = self.spine_xy(Z)
            rr = 4.0 + M.psoas_r * np.clip((-55.0 - Z) / 160.0, 0.0, 1.0)
            m = np.zeros(np.broadcast_shapes(X.shape, Y.shape, Z.shape), dtype=bool)
            for s in (-1.0, 1.0):
                cx = xs + s * (S.rbx0 + rr * 0.8 + 3.0)
                q = ((X - cx) / rr) ** 2 + ((Y - ys - 2.0) / (rr * 0.9)) ** 2
                m |= q < 1.0
            m &= (self.wall_in[sl] > -4.0) & (Z < -50.0)
            self.put(sl, m, H.muscle + self.het(m, sl, 1, 4.0))

    def lungs(self):
        A, H = self.A, self.A.hu
        B, S = A.body, A.spine
        sl, (X, Y, Z) = self.block((-B.a0 - 20, -B.b0 - 20, -140), (B.a0 + 20, B.b0 + 20, 1e4))
        if sl is None:
            return
        xs, ys = self.spine_xy(Z)
        m = (self.wall_in[sl] > 0) & (self.zrel[sl] > 2.5)
        # posterior mediastinum (spine, aorta, oesophagus) and the paravertebral muscles
        col = ((X - xs + 6.0) / (S.rbx0 + 14.0)) ** 2 + ((Y - ys - 8.0) / (S.rby0 + 26.0)) ** 2 < 1.0
        col |= ((X - xs) / (S.rbx0 + 16.0)) ** 2 + ((Y - ys + 35.0) / 45.0) ** 2 < 1.0
        m &= ~col
        if not m.any():
            return
        y = _take(Y, m)
        yy = _take(ys, m)
        hu = np.float32(H.lung) + H.lung_dep * np.clip((yy + 10.0 - y) / 60.0, 0.0, 1.0)
        hu += 12.0 * self.field(_F_HET, sl, A.offsets[2])[m]
        va = self.field(_F_VES_A, sl, A.offsets[3])[m]
        vb = self.field(_F_VES_B, sl, A.offsets[3])[m]
        ves = np.clip(1.0 - np.sqrt(va * va + vb * vb) / 0.45, 0.0, 1.0)
        hu += (H.blood * 0.5 + 10.0 - hu) * ves
        self.put(sl, m, hu, 5)

    def heart_stomach(self):
        A, H = self.A, self.A.hu
        # heart with pericardial fat, sitting on the diaphragm
        c, r = A.heart.c, A.heart.r
        R = _rotation((0, 0, 1), A.heart.rot)
        rm = max(r) + 8
        sl, (X, Y, Z) = self.block(np.subtract(c, rm), np.add(c, rm))
        if sl is not None:
            mfat, _ = self.blob(sl, X, Y, Z, c, R, np.add(r, 5.0), 0.05, A.offsets[4])
            mfat &= (self.zrel[sl] > 2.5) & (self.wall_in[sl] > 0)
            self.put(sl, mfat, H.fat + 15.0, 0)
            mh, q = self.blob(sl, X, Y, Z, c, R, r, 0.05, A.offsets[4])
            keep = (self.zrel[sl] > 4.0)[mh]
            mh2 = mh.copy()
            mh2[mh] = keep
            hu = np.where(q > 0.8, H.myo, H.blood - 20.0 * (A.phase != "native"))[keep]
            self.put(sl, mh2, hu.astype(np.float32), 0)
        # stomach: wall, fluid/food content and an anterior gas cap
        if A.stomach.present:
            c, r = A.stomach.c, A.stomach.r
            rm = max(r) + 5
            sl, (X, Y, Z) = self.block(np.subtract(c, rm), np.add(c, rm))
            if sl is not None:
                m, q = self.blob(sl, X, Y, Z, c, np.eye(3), r, 0.12, A.offsets[5])
                keep = ((self.zrel[sl] < -4.0) & (self.wall_in[sl] > 1.0))[m]
                y = _take(Y, m)
                hu = np.where(q > 0.85, H.muscle + 10.0, H.stomach).astype(np.float32)
                gas = (y > c[1] + r[1] * (1.0 - 2.0 * A.stomach.gas)) & (q < 0.85)
                hu[gas] = -950.0
                mm = m.copy()
                mm[m] = keep
                self.put(sl, mm, hu[keep], 0)

    def liver_spleen(self):
        A, H = self.A, self.A.hu
        S = A.spine
        # liver = union of a right and a left lobe, clipped by the diaphragm and body wall
        cR, rR, cL, rL = A.liver.right_c, A.liver.right_r, A.liver.left_c, A.liver.left_r
        lo = np.minimum(np.subtract(cR, rR), np.subtract(cL, rL)) - 15.0
        hi = np.maximum(np.add(cR, rR), np.add(cL, rL)) + 15.0
        sl, (X, Y, Z) = self.block(lo, hi)
        if sl is not None:
            mR, _ = self.blob(sl, X, Y, Z, cR, np.eye(3), rR, A.liver.deform, A.offsets[6])
            mL, _ = self.blob(sl, X, Y, Z, cL, np.eye(3), rL, A.liver.deform, A.offsets[7])
            xs, ys = self.spine_xy(Z)
            prevert = (np.abs(X - xs) < S.rbx0 + 12.0) & (Y < ys + S.rby0 + 12.0)
            m = (mR | mL) & (self.zrel[sl] < -3.5) & (self.wall_in[sl] > 1.0) & ~prevert
            if m.any():
                hu = np.float32(H.liver) + self.het(m, sl, 0, H.het)
                va = self.field(_F_VES_A, sl)[m]
                vb = self.field(_F_VES_B, sl)[m]
                ves = np.clip(1.0 - np.sqrt(va * va + vb * vb) / 0.30, 0.0, 1.0)
                hu += (H.liver_ves - hu) * ves
                self.put(sl, m, hu, 1)
        # spleen: rotated ellipsoid with a concave (medial) visceral surface
        c, r = A.spleen.c, A.spleen.r
        th = A.spleen.rot
        # columns = local axes (thin, long, SI); anterior end of the long axis tilts medially (+x)
        R = np.array([[math.cos(th), math.sin(th), 0.0], [-math.sin(th), math.cos(th), 0.0], [0.0, 0.0, 1.0]])
        rm = max(r) + 10
        sl, (X, Y, Z) = self.block(np.subtract(c, rm), np.add(c, rm))
        if sl is not None:
            m, _ = self.blob(sl, X, Y, Z, c, R, r, A.spleen.deform, A.offsets[1])
            cdir = np.array([1.0, 0.45, 0.0]) / math.hypot(1.0, 0.45)
            cc = np.add(c, cdir * r[0] * 1.5)  # concavity centre, antero-medial of the spleen (hilum)
            q2 = ((X - cc[0]) / (r[0] * 0.8)) ** 2 + ((Y - cc[1]) / (r[1] * 0.6)) ** 2 + ((Z - cc[2]) / (r[2] * 0.7)) ** 2
            m &= (q2 > 1.0) & (self.zrel[sl] < -3.5) & (self.wall_in[sl] > 1.0)
            if m.any():
                self.put(sl, m, np.float32(H.spleen) + self.het(m, sl, 3, H.het), 2)

    def kidneys(self):
        A, H = self.A, self.A.hu
        for k in A.kidneys:
            c, r = k.c, k.r
            medial = np.array([-k.side, 0.0, 0.0])
            e_long = np.array([medial[0] * math.sin(k.tilt), 0.0, math.cos(k.tilt)])  # upper pole medial
            e_h = np.array([medial[0] * math.cos(k.hilum), math.sin(k.hilum), 0.0])  # hilum: antero-medial
            e_h -= e_h.dot(e_long) * e_long
            e_h /= np.linalg.norm(e_h)
            e_t = np.cross(e_long, e_h)
            # local axes (hilum direction, third, long) with radii (r_lat, r_ap, r_si)
            R = np.stack([e_h, e_t, e_long], axis=1)
            rl = (r[0], r[1], r[2])
            rm = max(r) + k.fat + 10
            sl, (X, Y, Z) = self.block(np.subtract(c, rm), np.add(c, rm))
            if sl is None:
                continue
            clip = (self.zrel[sl] < -3.5) & (self.wall_in[sl] > 0.0)
            mf, _ = self.blob(sl, X, Y, Z, c, R, np.add(rl, k.fat), 0.05, k.off)
            mf &= clip & (self.lab[sl] == 0)  # perirenal fat does not carve liver / spleen
            self.put(sl, mf, H.fat + self.het(mf, sl, 4, 5.0), 0)
            m, q = self.blob(sl, X, Y, Z, c, R, rl, k.deform, k.off)
            keep = clip[m]
            hu = np.where(q > 0.72, H.kcortex, H.kmed).astype(np.float32)
            # renal sinus (fat / urine) opening towards the hilum
            dx, dy, dz = _take(X, m) - c[0], _take(Y, m) - c[1], _take(Z, m) - c[2]
            lh = (dx * e_h[0] + dy * e_h[1] + dz * e_h[2]) / rl[0]
            lt = (dx * e_t[0] + dy * e_t[1] + dz * e_t[2]) / rl[1]
            ll = (dx * e_long[0] + dy * e_long[1] + dz * e_long[2]) / rl[2]
            sinus = ((lh - 0.55) / 0.5) ** 2 + (lt / 0.35) ** 2 + (ll / 0.5) ** 2 < 1.0
            hu[sinus] = H.sinus
            hu += np.float32(H.het * 0.7) * self.field(_F_HET, sl, k.off)[m]
            lab = np.where(sinus, 0, 3 if k.side > 0 else 4).astype(np.uint8)
            mm = m.copy()
            mm[m] = keep
            self.put(sl, mm, hu[keep])
            self.lab[sl][mm] = lab[keep]

    def vessels_gb(self):
        A, H = self.A, self.A.hu
        S, V = A.spine, A.vessels
        if A.gallbladder.present:
            c, r = A.gallbladder.c, A.gallbladder.r
            R = _rotation((1, 0, 0), math.radians(25.0))
            rm = max(r) + 5
            sl, (X, Y, Z) = self.block(np.subtract(c, rm), np.add(c, rm))
            if sl is not None:
                m, _ = self.blob(sl, X, Y, Z, c, R, r, 0.05, A.offsets[2])
                m &= (self.zrel[sl] < -4.0) & (self.wall_in[sl] > 1.0)
                self.put(sl, m, H.gb, 0)
        # aorta (left-anterior of the spine; posterior mediastinum above the diaphragm) and
        # inferior vena cava (right), both with iliac branches below the bifurcation
        sl, (X, Y, Z) = self.block((-90, S.ys0 - 40, -1e4), (90, S.ys0 + 80, 1e4))
        if sl is None:
            return
        xs, ys = self.spine_xy(Z)
        t = _sigmoid((Z + 10.0) / 12.0)  # 0 in the abdomen, 1 in the thorax
        ax = xs + V.aorta_x * (1.0 - t) + (-S.rbx0 - V.aorta_r * 0.6) * t
        ay = (ys + S.rby0 + V.aorta_r + 2.0) * (1.0 - t) + (ys + 4.0) * t
        ra = V.aorta_r * (1.0 + 0.12 * t)
        shp = np.broadcast_shapes(X.shape, Y.shape, Z.shape)
        above = Z > V.z_bif
        ma = above & (((X - ax) ** 2 + (Y - ay) ** 2) < ra * ra)
        spread = np.maximum(V.z_bif - Z, 0.0) * 0.45
        below = ~above
        ri = ra * 0.65
        for s in (-1.0, 1.0):
            ma = ma | (below & (((X - ax - s * spread) ** 2 + (Y - ay + 0.2 * spread) ** 2) < ri * ri))
        ma = np.broadcast_to(ma, shp) & (self.d[sl] > 5.0)
        iy = ys + S.rby0 + V.ivc_r[1] + 4.0
        ix = xs + V.ivc_x
        mi = (Z > V.z_bif) & (Z < 10.0) & ((((X - ix) / V.ivc_r[0]) ** 2 + ((Y - iy) / V.ivc_r[1]) ** 2) < 1.0)
        rv = V.ivc_r[1]
        for s in (-1.0, 1.0):
            mi = mi | ((Z <= V.z_bif) & (((X - ix * 0.5 - s * spread) ** 2 + (Y - iy + 0.2 * spread + 4) ** 2) < rv * rv))
        mi = np.broadcast_to(mi, shp) & (self.d[sl] > 5.0) & ~ma
        self.put(sl, mi, H.ivc + self.het(mi, sl, 5, 3.0), 0)
        self.put(sl, ma, H.blood + self.het(ma, sl, 6, 3.0), 0)

    def spine(self):
        A, H = self.A, self.A.hu
        S = A.spine
        sl, (X, Y, Z) = self.block((-90, S.ys0 - S.rby0 - 2 * S.rcy - S.l_spinous - 40, -1e4), (90, S.ys0 + 60, 1e4))
        if sl is None:
            return
        shp = np.broadcast_shapes(X.shape, Y.shape, Z.shape)
        Z3 = np.broadcast_to(Z, shp)
        n = np.clip(np.searchsorted(S.seg_lo, Z3, side="right") - 1, 0, len(S.seg_lo) - 1)
        t = (Z3 - S.body_lo[n]) / S.body_h[n]
        in_body_z = t >= 0.0
        sc = S.vscale[n]
        lumbar = np.clip(-Z3 / 250.0, 0.0, 1.0)
        rbx = (S.rbx0 + 4.0 * lumbar) * sc
        rby = (S.rby0 + 3.0 * lumbar) * sc
        xs, ys = self.spine_xy(Z)
        dx = X - xs
        dy = Y - ys
        rb = np.sqrt((dx / rbx) ** 2 + (dy / rby) ** 2)
        vb = in_body_z & (rb < 1.0)
        disc = ~in_body_z & (rb < 1.04)
        cortex = vb & ((rb > 1.0 - 2.2 / rbx) | (t < 0.07) | (t > 0.93))
        ycn = ys - rby - S.rcy - 1.5
        dyc = Y - ycn
        rc = np.sqrt((dx / S.rcx) ** 2 + (dyc / S.rcy) ** 2)
        canal = rc < 1.0
        arch_z = ~(in_body_z & (t > 0.85))
        ring = arch_z & (rc >= 1.0) & (rc < 1.0 + 6.5 / S.rcy) & (Y < ys - 0.3 * rby)
        spinous = in_body_z & (t < 0.75) & (np.abs(dx) < 4.0) & (dyc < -S.rcy) & (dyc > -S.rcy - S.l_spinous * sc)
        ltp = S.l_tp_thor + (S.l_tp_lumbar - S.l_tp_thor) * np.clip((-Z3 - 20.0) / 100.0, 0.0, 1.0)
        transverse = in_body_z & (t > 0.3) & (t < 0.75) & (np.abs(dyc - 2.0) < 4.5) & (np.abs(dx) < S.rcx + ltp)
        post = (ring | spinous | transverse) & ~canal
        self.put(sl, disc, H.disc, 0)
        self.put(sl, canal, H.csf, 0)
        hu_vb = np.where(cortex, H.cort, H.canc).astype(np.float32)[vb]
        hu_vb += self.het(vb, sl, 3, 25.0)
        self.put(sl, vb, hu_vb, 6)
        self.put(sl, post & ~vb, H.post, 6)

    def ribs_pelvis(self):
        A, H = self.A, self.A.hu
        B, S = A.body, A.spine
        sl = self.g.box((-B.a0 - 30, -B.b0 - 30, -150), (B.a0 + 30, B.b0 + 30, 1e4))
        if sl is not None:
            wall = self.wall_in[sl]
            band = (wall > -8.0) & (wall < 0.5)
            X, Y, Z = self.g.coords(sl)
            xs, ys = self.spine_xy(Z)
            post_c = (np.abs(X - xs) < S.rbx0 + 22.0) & (Y < ys + 10.0)
            band &= ~post_c
            if band.any():
                ux, uy = self.ux[sl][band], self.uy[sl][band]
                nrm = np.sqrt(ux * ux + uy * uy) + 1e-6
                phi = np.arccos(np.clip(-uy / nrm, -1.0, 1.0))  # 0 at the back, pi at the front
                z = _take(Z, band)
                R = 0.5 * (B.a0 + B.b0)
                zeff = z + A.ribs.slope * phi * R
                stripe = np.mod(zeff - A.ribs.offset, A.ribs.pitch) < A.ribs.width
                phimax = math.pi * (0.5 + 0.4 * np.clip((zeff - A.ribs.z_min) / 80.0, 0.0, 1.0))
                rib = stripe & (zeff > A.ribs.z_min) & (phi < phimax)
                cart = phi > 0.78 * math.pi
                hu = np.where(cart, H.cartilage, H.rib).astype(np.float32)
                m = band.copy()
                m[band] = rib
                self.put(sl, m, hu[rib], 0)
        # iliac wings below the iliac crest
        sl, (X, Y, Z) = self.block((-B.a0, -B.b0, -1e4), (B.a0, B.b0, A.z_crest))
        if sl is not None:
            xs, ys = self.spine_xy(Z)
            f = np.clip((A.z_crest - Z) / 140.0, 0.0, 1.0)
            m = np.zeros(np.broadcast_shapes(X.shape, Y.shape, Z.shape), dtype=bool)
            cort = np.zeros_like(m)
            for s in (-1.0, 1.0):
                cx = s * (S.rbx0 + 22.0)
                cy = ys + 35.0
                rx = B.ai * (0.52 - 0.2 * f)
                ry = B.bi * (0.55 - 0.12 * f)
                rn = np.sqrt(((X - cx) / rx) ** 2 + ((Y - cy) / ry) ** 2)
                th = 7.0 / (0.5 * (rx + ry))
                sector = (s * (X - cx) > 0.0) & (Y < cy + 0.6 * ry)
                wing = (np.abs(rn - 1.0) < th) & sector & (Z > A.z_crest - 110.0)
                m |= wing
                cort |= wing & (np.abs(rn - 1.0) > 0.45 * th)
            m &= self.d[sl] > 5.0
            hu = np.where(cort, H.cort * 0.7, H.canc)
            self.put(sl, m, np.broadcast_to(hu, m.shape)[m].astype(np.float32), 0)

# --------------------------------------------------------------------------- finishing


def _to_storage(img_r, lab_r, grid: _Grid, storage: StorageGrid):
    """Map the rendered image and labels onto the storage grid: exact transpose / flips if
    it is not oblique, else trilinear (image) / nearest (labels) resampling at the world
    positions of the storage voxels."""
    if not storage.oblique:
        clean = np.transpose(img_r, storage.axes)
        labels = np.transpose(lab_r, storage.axes)
        flips = tuple(a for a in range(3) if storage.signs[a] < 0)
        if flips:
            clean = np.flip(clean, flips)
            labels = np.flip(labels, flips)
        return np.ascontiguousarray(clean), np.ascontiguousarray(labels)
    # render-grid index of storage voxel i: (M @ i + origin - lo) / sp_r
    sp_r, lo = storage.ras_spacing, grid.origin
    mat = storage.M / sp_r[:, None]
    off = (storage.origin - lo) / sp_r
    out_shape = tuple(int(v) for v in storage.shape)
    clean = ndimage.affine_transform(img_r, mat, off, output_shape=out_shape, order=1, mode="nearest", output=np.float32)
    labels = ndimage.affine_transform(lab_r, mat, off, output_shape=out_shape, order=0, mode="nearest", output=np.uint8)
    return clean, labels


def _kernel_norm(sigma: float) -> float:
    """Standard deviation of 3-D gaussian-filtered unit white noise."""
    r = int(4.0 * sigma + 0.5)
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    return float(np.sqrt((k**2).sum()) ** 3)


def _finish(F: Finish, img, rng):
    """Global contrast change, partial-volume blur and (white + correlated) noise."""
    # random global contrast change of the tissues (gain about 0 HU plus an offset), faded
    # out below -300 HU so that air stays at about -1000 HU
    delta = np.clip(img, -150.0, 1500.0)
    delta *= np.float32(F.gain - 1.0)
    delta += np.float32(F.shift)
    delta *= np.clip((img + 700.0) * np.float32(1.0 / 400.0), 0.0, 1.0)
    img += delta
    del delta
    out = ndimage.gaussian_filter(img, F.pv_sigma, mode="nearest")
    white = rng.standard_normal(img.shape, dtype=np.float32)
    corr = ndimage.gaussian_filter(white, F.noise_sigma, mode="nearest")
    corr *= np.float32(F.noise_corr / _kernel_norm(F.noise_sigma))
    out += corr
    white *= np.float32(F.noise_white)
    out += white
    np.clip(out, -1024.0, 3071.0, out=out)
    return out


def _apply_recon_circle(image, labels, storage: StorageGrid, radius_fraction: float) -> None:
    """Pad the image with -1024 (and clear the labels) outside the reconstruction circle,
    whose radius is a fraction of the larger in-plane side of the field of view."""
    ext_grid = [float(storage.shape[storage.axes.index(w)] * storage.spacing[storage.axes.index(w)]) for w in (0, 1)]
    radius = radius_fraction * max(ext_grid)
    outside = np.broadcast_to(_axis_distance2(storage) > np.float32(radius * radius), image.shape)
    image[outside] = -1024.0
    labels[outside] = 0
