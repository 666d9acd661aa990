"""The random anatomy of a phantom: body outline, skeleton, organs, tissue HU, image look.

Everything here is drawn from the anatomy random stream only, so the anatomy depends on the
seed alone, not on the voxel grid.  Lengths are mm and positions anatomy-frame coordinates
(RAS-aligned, x = 0 on the midline, y = 0 at the body centre, z = 0 at the top of the right
diaphragm dome).  Angles are radians.

The order of the draws is part of the output: reordering them, or adding one, changes every
phantom (and with them the demo model's training data and its measured scores).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Vec3 = tuple[float, float, float]
#: a slow variation along z, a sum of sinusoids: [(amplitude, wavelength mm, phase), ...]
Waves = list[tuple[float, float, float]]


def _wave(terms: Waves, z):
    """Sum of a few sinusoids of z: terms = [(amplitude, wavelength, phase), ...]."""
    out = 0.0
    for amp, lam, ph in terms:
        out = out + amp * np.sin(z * np.float32(2.0 * math.pi / lam) + np.float32(ph))
    return out


def _waves(rng, n, amp, lam_lo, lam_hi) -> Waves:
    return [(float(rng.uniform(-amp, amp)), float(rng.uniform(lam_lo, lam_hi)), float(rng.uniform(0, 2 * math.pi))) for _ in range(n)]


# --------------------------------------------------------------------------- records


@dataclass
class Body:
    """Outline of the trunk (a superellipse varying along z) and its wall layers."""

    adipose: float  # 0 (lean) .. 1 (obese): scales the body size and the fat layers
    a0: float  # lateral semi-axis of the outline
    b0: float  # antero-posterior semi-axis of the outline
    p_body: float  # superellipse exponent of the outline (> 2: boxy abdomen)
    a_w: Waves  # relative variation of a0 along z
    b_w: Waves  # relative variation of b0 along z
    cy_w: Waves  # antero-posterior shift of the outline along z (mm)
    pelvis_widen: float  # relative widening of the outline at the pelvis
    f_lat: float  # subcutaneous fat thickness at the sides
    f_ant: float  # ... in front
    f_post: float  # ... at the back
    fat_w: Waves  # relative variation of the fat thickness along z
    mus: float  # thickness of the muscle wall
    mus_post: float  # extra thickness of the posterior muscle wall
    y_flat: float  # y of the flattened back (lying on the table)

    # The interior (inside the muscle wall) at mid-abdomen, an ellipse-like cross-section
    # that positions the organs.
    @property
    def y_post_in(self) -> float:
        """y of the posterior interior boundary."""
        return self.y_flat + self.f_post + self.mus + self.mus_post

    @property
    def ai(self) -> float:
        """Lateral semi-axis of the interior."""
        return self.a0 - self.f_lat - self.mus

    @property
    def bi(self) -> float:
        """Antero-posterior semi-axis of the interior."""
        return 0.5 * (self._y_ant_in - self.y_post_in)

    @property
    def cyi(self) -> float:
        """y of the centre of the interior."""
        return 0.5 * (self._y_ant_in + self.y_post_in)

    @property
    def _y_ant_in(self) -> float:
        return self.b0 - self.f_ant - self.mus


@dataclass
class Table:
    """The scanner table under the patient's back."""

    present: bool
    thickness: float
    curvature: float  # the top drops by curvature * x**2 (mm) away from the midline
    shell_hu: float  # HU of its thin top and bottom shells (the core is foam)


@dataclass
class Spine:
    """Vertebral column: a wavy centre line and vertebrae / discs stacked along z."""

    ys0: float  # y of the vertebral-body centre before lordosis / kyphosis
    lordosis: float  # anterior bulge (mm) of the lumbar spine
    kyphosis: float  # posterior drift (mm) of the thoracic spine
    scol: Waves  # lateral (scoliotic) wave of the centre line
    rbx0: float  # lateral semi-axis of a thoracic vertebral body
    rby0: float  # antero-posterior semi-axis of a thoracic vertebral body
    rcx: float  # lateral semi-axis of the spinal canal
    rcy: float  # antero-posterior semi-axis of the spinal canal
    l_spinous: float  # length of the spinous processes
    l_tp_lumbar: float  # length of the lumbar transverse processes
    l_tp_thor: float  # length of the thoracic transverse processes
    seg_lo: np.ndarray  # float32, z of the bottom of each level (disc + vertebral body), increasing
    body_lo: np.ndarray  # float32, z of the bottom of each level's vertebral body (top of its disc)
    body_h: np.ndarray  # float32, height of each vertebral body
    vscale: np.ndarray  # float32, size factor of each vertebra

    def centre_xy(self, z):
        """(x, y) of the vertebral-body centre line at height z."""
        ys = self.ys0 + self.lordosis * np.exp(-(((z + 190.0) / 130.0) ** 2)) - self.kyphosis * np.clip(z / 200.0, 0.0, 1.5)
        xs = _wave(self.scol, z)
        return xs, ys


@dataclass
class Diaphragm:
    """Two domes, the right one (top at z = 0) higher than the left."""

    zL: float  # top of the left dome
    dome_x: float  # |x| of the dome tops (right at +dome_x, left at -dome_x)
    dome_y: float  # y of the dome tops
    k_lat: float  # drop (mm) one interior semi-axis lateral of a dome top
    k_post: float  # drop one interior semi-axis posterior of the domes (costophrenic recesses)
    k_ant: float  # drop one interior semi-axis anterior of the domes
    wave: tuple[float, float, float, float, float]  # ripple: amplitude, x and y length scales, x and y phases


def _diaphragm_height(dia: Diaphragm, body: Body, x, y):
    """Height (z, mm) of the diaphragm surface above (x, y): two domes (right one higher),
    dropping laterally and much more posteriorly (costophrenic recesses)."""
    yd = (y - dia.dome_y) / body.bi
    yterm = dia.k_post * np.minimum(yd, 0.0) ** 2 + dia.k_ant * np.maximum(yd, 0.0) ** 2
    qr = dia.k_lat * ((x - dia.dome_x) / body.ai) ** 2
    ql = dia.k_lat * ((x + dia.dome_x) / body.ai) ** 2
    amp, lx, ly, px, py = dia.wave
    pert = amp * np.sin(x / lx + px) * np.cos(y / ly + py)
    return np.maximum(0.0 - qr, dia.zL - ql) - yterm + pert


@dataclass
class Liver:
    """Union of a right and a left lobe (axis-aligned deformed ellipsoids)."""

    right_c: Vec3  # centre of the right lobe
    right_r: Vec3  # semi-axes of the right lobe
    left_c: Vec3
    left_r: Vec3
    deform: float  # amplitude of the random surface deformation (fraction of the radius)


@dataclass
class Spleen:
    c: Vec3  # centre
    r: Vec3  # semi-axes (thin, long, cranio-caudal) before rotation
    rot: float  # rotation about z of the long axis
    deform: float  # amplitude of the random surface deformation (fraction of the radius)


@dataclass
class Kidney:
    side: float  # +1 right kidney, -1 left kidney
    c: Vec3  # centre
    r: Vec3  # semi-axes (lateral, antero-posterior, cranio-caudal) before rotation
    tilt: float  # the upper pole leans medially by this angle
    hilum: float  # the hilum faces medially, turned anteriorly by this angle
    fat: float  # thickness of the perirenal fat
    deform: float  # amplitude of the random surface deformation (fraction of the radius)
    off: Vec3  # offset into the noise fields (decorrelates the two kidneys)


@dataclass
class Stomach:
    present: bool
    c: Vec3  # centre
    r: Vec3  # semi-axes
    gas: float  # fraction of the antero-posterior diameter, from the front, taken by the gas cap


@dataclass
class Gallbladder:
    present: bool
    c: Vec3  # centre
    r: Vec3  # semi-axes before the 25 degree tilt about x


@dataclass
class Heart:
    c: Vec3  # centre
    r: Vec3  # semi-axes before rotation
    rot: float  # rotation about z


@dataclass
class Vessels:
    """Aorta and inferior vena cava, which split into the iliac vessels at z_bif."""

    aorta_r: float  # radius of the abdominal aorta
    aorta_x: float  # x of the abdominal aorta relative to the spine (left: negative)
    ivc_x: float  # x of the inferior vena cava relative to the spine (right: positive)
    ivc_r: tuple[float, float]  # lateral and antero-posterior semi-axes of the vena cava
    z_bif: float  # height of the bifurcation


@dataclass
class BackMuscles:
    para_x: float  # |x| of the paraspinal muscle centres from the spine
    para_rx: float  # lateral semi-axis of a paraspinal muscle
    psoas_r: float  # how much the psoas radius grows towards the pelvis


@dataclass
class Ribs:
    """Ribs as oblique stripes of the body wall, cartilage at the front."""

    pitch: float  # cranio-caudal distance between successive ribs
    width: float  # cranio-caudal width of a rib
    slope: float  # how much a rib descends from the back to the front (mm per mm of arc)
    offset: float  # phase of the stripe pattern (mm)
    z_min: float  # no rib below this height (at the back)


@dataclass
class Bowel:
    """Thresholds on the smooth bowel / gas noise fields."""

    thr: float  # bowel where the bowel field exceeds it, mesenteric fat elsewhere
    gas_thr: float  # gas where the gas field exceeds it
    oral: bool  # oral contrast in the bowel
    oral_thr: float  # oral contrast where the gas field is below minus this


@dataclass
class TissueHU:
    """Tissue HU levels, before the global contrast change of the finishing step."""

    fat: float
    skin: float
    muscle: float  # skeletal muscle
    bowel: float  # bowel content
    bowel_wall: float
    lung: float
    lung_dep: float  # extra HU of the dependent (posterior) lung
    canc: float  # cancellous bone
    cort: float  # cortical bone
    post: float  # posterior vertebral elements
    disc: float  # intervertebral discs
    csf: float
    gb: float  # gallbladder bile
    stomach: float  # stomach content
    rib: float
    cartilage: float  # costal cartilage
    oral: float  # oral contrast
    sinus: float  # renal sinus
    table_core: float
    liver: float
    spleen: float
    kcortex: float  # renal cortex
    kmed: float  # renal medulla
    blood: float  # arterial blood (aorta, heart chambers; scaled down for the small vessels)
    ivc: float  # blood of the inferior vena cava
    liver_ves: float  # hepatic vessels
    myo: float  # myocardium
    het: float  # amplitude of the parenchymal heterogeneity of liver, spleen, kidneys


@dataclass
class Finish:
    """Image-formation parameters of the finishing step (not anatomy, drawn with it)."""

    gain: float  # global contrast gain about 0 HU
    shift: float  # global HU offset
    noise_white: float  # standard deviation of the white noise
    noise_corr: float  # standard deviation of the correlated noise
    noise_sigma: float  # gaussian sigma (voxels) that correlates it
    pv_sigma: float  # gaussian sigma (voxels) of the partial-volume blur


@dataclass
class ReconCircle:
    """The scanner's reconstruction circle: outside it the image is padded with -1024."""

    present: bool
    radius: float  # fraction of the larger in-plane side of the field of view


@dataclass
class Anatomy:
    body: Body
    table: Table
    spine: Spine
    diaphragm: Diaphragm
    liver: Liver
    spleen: Spleen
    kidneys: list[Kidney]  # right, left
    stomach: Stomach
    gallbladder: Gallbladder
    heart: Heart
    vessels: Vessels
    z_crest: float  # height of the iliac crest (top of the iliac wings)
    muscles: BackMuscles
    ribs: Ribs
    bowel: Bowel
    phase: str  # contrast phase: "native", "portal_venous" or "arterial"
    hu: TissueHU
    finish: Finish
    offsets: list[Vec3]  # shifts (mm) into the noise fields, indexed per organ so that organs differ in texture
    recon: ReconCircle

    @property
    def z_low(self) -> float:
        """Lowest point that the default field of view must contain (kidney lower poles,
        liver tip)."""
        lowest = [k.c[2] - k.r[2] for k in self.kidneys] + [self.liver.right_c[2] - self.liver.right_r[2]]
        return float(min(lowest) - 15.0)


# --------------------------------------------------------------------------- sampling


def _sample_anatomy(rng) -> Anatomy:
    body = _sample_body(rng)
    table = _sample_table(rng)
    spine = _sample_spine(rng, body)
    diaphragm = _sample_diaphragm(rng, body)
    liver = _sample_liver(rng, body, diaphragm)
    spleen = _sample_spleen(rng, body, spine, diaphragm)
    kidneys = _sample_kidneys(rng, body, spine, spleen)
    stomach = _sample_stomach(rng, body, diaphragm)
    gallbladder = _sample_gallbladder(rng, body, liver)
    heart = _sample_heart(rng, body)
    vessels, z_crest = _sample_vessels(rng)
    muscles = _sample_back_muscles(rng)
    ribs = _sample_ribs(rng)
    bowel = _sample_bowel(rng, body)
    phase = str(rng.choice(["native", "portal_venous", "arterial"], p=[0.4, 0.45, 0.15]))
    hu = _sample_tissue_hu(rng, phase)
    finish = _sample_finish(rng)
    offsets = [tuple(float(v) for v in rng.uniform(-250, 250, 3)) for _ in range(8)]
    recon = _sample_recon_circle(rng)
    return Anatomy(body=body, table=table, spine=spine, diaphragm=diaphragm, liver=liver, spleen=spleen,
                   kidneys=kidneys, stomach=stomach, gallbladder=gallbladder, heart=heart, vessels=vessels,
                   z_crest=z_crest, muscles=muscles, ribs=ribs, bowel=bowel, phase=phase, hu=hu, finish=finish,
                   offsets=offsets, recon=recon)


def _sample_body(rng) -> Body:
    u = rng.uniform
    adipose = float(u(0.0, 1.0))
    a0 = float(u(132.0, 160.0) + 35.0 * adipose)
    b0 = float(a0 * u(0.64, 0.80))
    p_body = float(u(2.0, 2.6))
    a_w = _waves(rng, 2, 0.035, 250.0, 700.0)
    b_w = _waves(rng, 2, 0.025, 250.0, 700.0)
    cy_w = _waves(rng, 2, 3.0, 300.0, 800.0)
    pelvis_widen = float(u(0.03, 0.10))
    f_lat = float(5.0 + 25.0 * adipose * u(0.7, 1.3))
    f_ant = float(5.0 + 28.0 * adipose * u(0.7, 1.3))
    f_post = float(5.0 + 22.0 * adipose * u(0.7, 1.3))
    fat_w = _waves(rng, 2, 0.15, 150.0, 400.0)
    mus = float(u(8.0, 14.0))
    mus_post = float(u(4.0, 12.0))
    y_flat = float(-b0 * u(0.86, 0.93))
    return Body(adipose=adipose, a0=a0, b0=b0, p_body=p_body, a_w=a_w, b_w=b_w, cy_w=cy_w, pelvis_widen=pelvis_widen,
                f_lat=f_lat, f_ant=f_ant, f_post=f_post, fat_w=fat_w, mus=mus, mus_post=mus_post, y_flat=y_flat)


def _sample_table(rng) -> Table:
    u = rng.uniform
    present = bool(rng.random() < 0.8)
    thickness = float(u(30.0, 55.0))
    curvature = float(u(0.0, 4e-4))
    shell_hu = float(u(150.0, 350.0))
    return Table(present=present, thickness=thickness, curvature=curvature, shell_hu=shell_hu)


def _sample_spine(rng, body: Body) -> Spine:
    u = rng.uniform
    ys0 = float(body.y_flat + body.f_post + u(64.0, 80.0))
    lordosis = float(u(0.0, 22.0))
    kyphosis = float(u(0.0, 15.0))
    scol = _waves(rng, 1, 4.0, 300.0, 700.0)
    rbx0 = float(u(17.0, 20.0))
    rby0 = float(u(13.0, 15.5))
    rcx = float(u(9.0, 11.5))
    rcy = float(u(7.0, 9.0))
    l_spinous = float(u(28.0, 40.0))
    l_tp_lumbar = float(u(22.0, 32.0))
    l_tp_thor = float(u(12.0, 18.0))
    # levels (disc below, vertebral body above) from far below to far above any field of
    # view; lumbar levels are taller
    lo, body_lo, body_h, scale = [], [], [], []
    z = -700.0
    while z < 400.0:
        lumbar = float(np.clip(-z / 200.0, 0.0, 1.0))
        dh = u(5.0, 7.5) + 3.0 * lumbar
        bh = u(21.0, 25.0) + 5.0 * lumbar
        lo.append(z)
        body_lo.append(z + dh)
        body_h.append(bh)
        scale.append(u(0.95, 1.05))
        z += dh + bh
    return Spine(ys0=ys0, lordosis=lordosis, kyphosis=kyphosis, scol=scol, rbx0=rbx0, rby0=rby0, rcx=rcx, rcy=rcy,
                 l_spinous=l_spinous, l_tp_lumbar=l_tp_lumbar, l_tp_thor=l_tp_thor,
                 seg_lo=np.array(lo, dtype=np.float32), body_lo=np.array(body_lo, dtype=np.float32),
                 body_h=np.array(body_h, dtype=np.float32), vscale=np.array(scale, dtype=np.float32))


def _sample_diaphragm(rng, body: Body) -> Diaphragm:
    u = rng.uniform
    zL = float(-u(8.0, 25.0))
    dome_x = float(body.ai * u(0.40, 0.50))
    dome_y = float(body.cyi + body.bi * u(-0.1, 0.15))
    k_lat = float(u(60.0, 90.0))
    k_post = float(u(50.0, 85.0))
    k_ant = float(u(30.0, 50.0))
    wave = (float(u(1.0, 4.0)), float(u(30.0, 60.0)), float(u(30.0, 60.0)), float(u(0, 6.3)), float(u(0, 6.3)))
    return Diaphragm(zL=zL, dome_x=dome_x, dome_y=dome_y, k_lat=k_lat, k_post=k_post, k_ant=k_ant, wave=wave)


def _sample_liver(rng, body: Body, dia: Diaphragm) -> Liver:
    u = rng.uniform
    ai, bi, cyi = body.ai, body.bi, body.cyi
    right_r = (u(70.0, 86.0), u(68.0, 88.0), u(88.0, 105.0))
    x, y = ai - right_r[0] * u(0.70, 0.85), cyi + bi * u(0.10, 0.25)
    # the right lobe's top lies just under the right dome
    right_c = (x, y, float(_diaphragm_height(dia, body, x, y) - right_r[2] * u(0.62, 0.78)))
    left_r = (u(55.0, 70.0), u(30.0, 40.0), u(40.0, 55.0))
    left_c = (-u(5.0, 25.0), cyi + bi - left_r[1] * u(1.0, 1.3), -u(30.0, 48.0))
    deform = float(u(0.06, 0.12))
    return Liver(right_c=right_c, right_r=right_r, left_c=left_c, left_r=left_r, deform=deform)


def _sample_spleen(rng, body: Body, spine: Spine, dia: Diaphragm) -> Spleen:
    u = rng.uniform
    ai, bi, cyi = body.ai, body.bi, body.cyi
    r = (u(25.0, 30.0), u(50.0, 60.0), u(46.0, 56.0))
    rot = float(math.radians(u(15.0, 35.0)))
    y = max(spine.ys0 + u(-12.0, 10.0), cyi - 0.55 * bi)  # not where the interior narrows
    yn = min(abs(y - cyi) / bi, 0.9)
    half_w = ai * (1.0 - yn ** body.p_body) ** (1.0 / body.p_body)  # interior half-width at that y
    ext_x = math.hypot(r[0] * math.cos(rot), r[1] * math.sin(rot))
    x = -(half_w - ext_x * u(0.85, 1.0))
    # the spleen's top lies just under the (posterior, lateral, hence low) left diaphragm
    c = (x, y, float(_diaphragm_height(dia, body, x, y) - r[2] * u(0.55, 0.75)))
    deform = float(u(0.05, 0.10))
    return Spleen(c=c, r=r, rot=rot, deform=deform)


def _sample_kidneys(rng, body: Body, spine: Spine, spleen: Spleen) -> list[Kidney]:
    u = rng.uniform
    zr = -u(106.0, 122.0)
    zl = zr + u(0.0, 12.0)
    kidneys = []
    for side, zc in ((1.0, zr), (-1.0, zl)):  # +x = patient right (RAS)
        r = (u(24.0, 28.0), u(27.0, 31.0), u(48.0, 56.0))  # (lateral, AP, SI) before rotation
        y = max(spine.ys0 + u(-8.0, 6.0), body.y_post_in + r[1] + 6.0)  # inside the posterior wall
        if side < 0:  # the left kidney's upper pole lies below / medial to the spleen
            zc = min(zc, spleen.c[2] - 0.45 * (spleen.r[2] + r[2]))
        x = side * (spine.rbx0 + u(38.0, 48.0))
        tilt = float(math.radians(u(8.0, 18.0)))
        hilum = float(math.radians(u(20.0, 45.0)))
        fat = float(u(2.0, 4.5) + 5.0 * body.adipose)
        deform = float(u(0.03, 0.07))
        off = tuple(float(v) for v in u(-200, 200, 3))
        kidneys.append(Kidney(side=side, c=(x, y, zc), r=r, tilt=tilt, hilum=hilum, fat=fat, deform=deform, off=off))
    return kidneys


def _sample_stomach(rng, body: Body, dia: Diaphragm) -> Stomach:
    u = rng.uniform
    ai, bi, cyi = body.ai, body.bi, body.cyi
    present = bool(rng.random() < 0.85)
    c = (-ai * u(0.25, 0.45), cyi + bi * u(0.10, 0.35), dia.zL - u(40.0, 70.0))
    r = (u(30.0, 45.0), u(25.0, 38.0), u(40.0, 60.0))
    gas = float(u(0.1, 0.7))
    return Stomach(present=present, c=c, r=r, gas=gas)


def _sample_gallbladder(rng, body: Body, liver: Liver) -> Gallbladder:
    u = rng.uniform
    ai, bi, cyi = body.ai, body.bi, body.cyi
    present = bool(rng.random() < 0.8)
    c = (ai * u(0.20, 0.35), cyi + bi * u(0.25, 0.45), liver.right_c[2] - liver.right_r[2] * u(0.35, 0.55))
    r = (u(11.0, 16.0), u(11.0, 16.0), u(25.0, 38.0))
    return Gallbladder(present=present, c=c, r=r)


def _sample_heart(rng, body: Body) -> Heart:
    u = rng.uniform
    c = (-u(10.0, 30.0), body.cyi + body.bi * u(0.15, 0.30), u(35.0, 55.0))
    r = (u(55.0, 68.0), u(42.0, 52.0), u(48.0, 60.0))
    rot = float(math.radians(u(20.0, 40.0)))
    return Heart(c=c, r=r, rot=rot)


def _sample_vessels(rng) -> tuple[Vessels, float]:
    """The great vessels and the height of the iliac crest, drawn together because the
    aorta bifurcates just above the crest."""
    u = rng.uniform
    aorta_r = float(u(9.0, 13.0))
    aorta_x = float(-u(10.0, 20.0))
    ivc_x = float(u(18.0, 28.0))
    ivc_r = (float(u(11.0, 15.0)), float(u(7.0, 10.0)))
    z_crest = float(-u(225.0, 275.0))
    z_bif = z_crest + float(u(5.0, 25.0))
    return Vessels(aorta_r=aorta_r, aorta_x=aorta_x, ivc_x=ivc_x, ivc_r=ivc_r, z_bif=z_bif), z_crest


def _sample_back_muscles(rng) -> BackMuscles:
    u = rng.uniform
    para_x = float(u(22.0, 32.0))
    para_rx = float(u(22.0, 32.0))
    psoas_r = float(u(16.0, 26.0))
    return BackMuscles(para_x=para_x, para_rx=para_rx, psoas_r=psoas_r)


def _sample_ribs(rng) -> Ribs:
    u = rng.uniform
    pitch = float(u(28.0, 36.0))
    width = float(u(8.0, 11.0))
    slope = float(u(0.20, 0.30))
    offset = float(u(0.0, pitch))
    z_min = float(-u(55.0, 75.0))
    return Ribs(pitch=pitch, width=width, slope=slope, offset=offset, z_min=z_min)


def _sample_bowel(rng, body: Body) -> Bowel:
    u = rng.uniform
    thr = float(u(-0.7, 0.0) + 0.5 * body.adipose)  # more mesenteric fat in obese patients
    gas_thr = float(u(1.2, 2.0))
    oral = bool(rng.random() < 0.25)
    oral_thr = float(u(1.3, 2.0))
    return Bowel(thr=thr, gas_thr=gas_thr, oral=oral, oral_thr=oral_thr)


def _sample_tissue_hu(rng, phase: str) -> TissueHU:
    u = rng.uniform
    fat = float(u(-110.0, -85.0))
    skin = float(u(10.0, 40.0))
    muscle = float(u(40.0, 55.0))
    bowel = float(u(15.0, 40.0))
    bowel_wall = bowel + float(u(0.0, 15.0))
    lung = float(u(-885.0, -820.0))
    lung_dep = float(u(0.0, 80.0))
    canc = float(u(120.0, 250.0))
    cort = float(u(500.0, 850.0))
    post = float(u(300.0, 550.0))
    disc = float(u(70.0, 110.0))
    csf = float(u(5.0, 25.0))
    gb = float(u(0.0, 20.0))
    stomach = float(u(0.0, 30.0))
    rib = float(u(250.0, 450.0))
    cartilage = float(u(90.0, 150.0))
    oral = float(u(180.0, 350.0))
    sinus = float(u(-70.0, -20.0))
    table_core = float(u(-950.0, -800.0))
    # the enhancing tissues, by contrast phase
    if phase == "native":
        liver = u(48.0, 68.0)
        spleen = u(38.0, 52.0)
        kcortex = u(28.0, 42.0)
        kmed = kcortex - u(0.0, 6.0)
        blood = u(35.0, 50.0)
        ivc = blood
        liver_ves = liver - u(10.0, 20.0)
        myo = muscle
    elif phase == "portal_venous":
        liver = u(95.0, 125.0)
        spleen = u(100.0, 130.0)
        kcortex = u(150.0, 200.0)
        kmed = kcortex - u(0.0, 25.0)
        blood = u(140.0, 180.0)
        ivc = blood - u(0.0, 20.0)
        liver_ves = liver + u(30.0, 60.0)
        myo = muscle + u(40.0, 70.0)
        muscle += 5.0
        bowel += 15.0
        bowel_wall += float(u(25.0, 50.0))
    else:  # arterial
        liver = u(65.0, 85.0)
        spleen = u(90.0, 140.0)
        kcortex = u(180.0, 250.0)
        kmed = u(70.0, 110.0)
        blood = u(250.0, 350.0)
        ivc = u(60.0, 100.0)
        liver_ves = liver + u(-5.0, 20.0)
        myo = muscle + u(50.0, 90.0)
        bowel += 10.0
        bowel_wall += float(u(20.0, 40.0))
    het = float(u(2.0, 6.0))
    return TissueHU(fat=fat, skin=skin, muscle=muscle, bowel=bowel, bowel_wall=bowel_wall, lung=lung,
                    lung_dep=lung_dep, canc=canc, cort=cort, post=post, disc=disc, csf=csf, gb=gb, stomach=stomach,
                    rib=rib, cartilage=cartilage, oral=oral, sinus=sinus, table_core=table_core, liver=liver,
                    spleen=spleen, kcortex=kcortex, kmed=kmed, blood=blood, ivc=ivc, liver_ves=liver_ves, myo=myo,
                    het=het)


def _sample_finish(rng) -> Finish:
    u = rng.uniform
    gain = float(u(0.96, 1.04))
    shift = float(u(-12.0, 12.0))
    noise_white = float(u(2.0, 8.0))
    noise_corr = float(u(4.0, 12.0))
    noise_sigma = float(u(0.7, 1.1))
    pv_sigma = float(u(0.35, 0.60))
    return Finish(gain=gain, shift=shift, noise_white=noise_white, noise_corr=noise_corr, noise_sigma=noise_sigma,
                  pv_sigma=pv_sigma)


def _sample_recon_circle(rng) -> ReconCircle:
    present = bool(rng.random() < 0.5)
    radius = float(rng.uniform(0.50, 0.58))
    return ReconCircle(present=present, radius=radius)
