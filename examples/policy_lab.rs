//! The policy lab: a single-threaded model of the adaptive policy's design space (window,
//! TinyLFU sketch, admission margin, ghost-driven or hill-climbing adaptation, CLOCK main
//! region with an optional frequency count), used to choose the design of `src/policy/`
//! before building it. It is a model, not clockline: the numbers in docs/design.md that come
//! from it say so, and the shipped policy is measured with `examples/simulator.rs`.
//!
//! ```text
//! cargo run --release --example policy_lab -- [options]
//!   --window F      initial window fraction (0.01)      --adapt none|hill|ghost|dist
//!   --mult F        sketch counters per entry / 4 (1)   --reset F  reset period x capacity (10)
//!   --margin N      admit if f(candidate) > f(victim) + N (0)
//!   --lruw          second turn for window entries hit while in the window
//!   --bits N        main-region frequency levels (1 = plain CLOCK bit)
//!   --every         count every hit in the sketch (instead of at the hand)
//!   --stepp F --decay F   dist adaptation: step (fraction of capacity) and distance fraction
//!   --maxw F --garr F     largest window and ghost records, as fractions of capacity
//!   --readme        the README's capacities, against LRU (the no-collapse check)
//!   env FLOOR, GFLOOR, WFLOOR: least sketch counters per row, ghost records, window entries
//!   env SLRU=F: the main region as a segmented LRU (F of the capacity protected; a hit in
//!     main moves the entry, and counts in the sketch) instead of the CLOCK: what a main
//!     region that reorders on every hit would give, which clockline's read path cannot do
//!   env CPROT=F: a CLOCK form of it: the hand protects a main entry it finds referenced,
//!     protected entries are passed by, and unprotected again when over F of the capacity
//! ```
//!
//! The shipped configuration:
//! `FLOOR=16384 GFLOOR=4096 WFLOOR=4096 cargo run --release --example policy_lab -- --mult 0.5
//! --maxw 0.25 --garr 0.25 --adapt dist --stepp 0.002 --decay 0.1 --reset 10 --margin 1 --lruw
//! --bits 2`
#![allow(dead_code, unused, clippy::all)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Read;

fn load(name: &str) -> Vec<u64> {
    let dir = std::env::var("CLOCKLINE_TRACES")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/traces").to_string());
    let p = format!("{dir}/normalized/{name}.keys.bin.gz");
    let mut d = flate2::read::GzDecoder::new(std::fs::File::open(p).unwrap());
    let mut b = Vec::new();
    d.read_to_end(&mut b).unwrap();
    b.chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58476d1ce4e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d049bb133111eb);
    x ^ (x >> 31)
}

struct Sketch {
    rows: Vec<Vec<u8>>,
    mask: usize,
    samples: usize,
    reset: usize,
    cons: bool,
    depth: usize,
}
impl Sketch {
    fn new(cap: usize, mult: f64, reset: f64) -> Self {
        let floor: usize = std::env::var("FLOOR")
            .ok()
            .map(|s| s.parse().unwrap())
            .unwrap_or(16);
        let depth: usize = std::env::var("DEPTH")
            .ok()
            .map(|s| s.parse().unwrap())
            .unwrap_or(4);
        let w = ((cap as f64 * mult * 4.0 / depth as f64) as usize)
            .max(floor)
            .next_power_of_two();
        Sketch {
            rows: vec![vec![0; w]; depth],
            mask: w - 1,
            samples: 0,
            reset: (reset * cap.max(1) as f64) as usize,
            cons: std::env::var("CONS").is_ok(),
            depth,
        }
    }
    fn idx(&self, h: u64, r: usize) -> usize {
        (mix(h ^ (r as u64 + 1).wrapping_mul(0x9e3779b97f4a7c15)) as usize) & self.mask
    }
    fn inc(&mut self, h: u64) {
        let mut any = false;
        let m = if self.cons { self.freq(h) } else { 0 };
        for r in 0..self.depth {
            let i = self.idx(h, r);
            if self.rows[r][i] < 15 && (!self.cons || self.rows[r][i] == m) {
                self.rows[r][i] += 1;
                any = true;
            }
        }
        if any {
            self.samples += 1;
        }
        if self.samples >= self.reset {
            for row in &mut self.rows {
                for c in row.iter_mut() {
                    *c >>= 1;
                }
            }
            self.samples /= 2;
        }
    }
    fn freq(&self, h: u64) -> u8 {
        (0..self.depth)
            .map(|r| self.rows[r][self.idx(h, r)])
            .min()
            .unwrap()
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Adapt {
    None,
    Hill,
    Ghost,
    Dist,
}

#[derive(Clone, Copy, Debug)]
struct Cfg {
    window: f64,
    adapt: Adapt,
    every_hit: bool,
    mult: f64,
    lru_window: bool,
    max_window: f64,
    tie_admit: bool,
    reset: f64,
    bits: u8,
    period: f64,
    stepp: f64,
    up: bool,
    restart: f64,
    decay: f64,
    sample: u64,
    margin: u8,
    dbl: bool,
    garr: f64,
}

#[derive(Clone, Copy)]
struct Ent {
    in_window: bool,
    slot: usize,
    refb: bool,
    f: u8,
}

struct W {
    cfg: Cfg,
    cap: usize,
    w: f64,
    map: HashMap<u64, Ent>,
    window: VecDeque<u64>,
    slots: Vec<u64>,
    free: Vec<usize>,
    hand: usize,
    main_len: usize,
    // SLRU main (SLRU=<protected fraction> env): stamp-ordered segments.
    slru: Option<f64>,
    cprot: Option<f64>,
    pc: usize,
    prob: std::collections::BTreeMap<u64, u64>,
    prot: std::collections::BTreeMap<u64, u64>,
    stamps: HashMap<u64, (bool, u64)>,
    clock_t: u64,
    sk: Sketch,
    // hill
    sh: usize,
    sm: usize,
    prev: f64,
    step: f64,
    // ghost
    gw: VecDeque<u64>,
    gws: HashSet<u64>,
    gm: VecDeque<u64>,
    gms: HashSet<u64>,
    dw: HashMap<u64, u64>,
    dm: HashMap<u64, u64>,
    wseq: u64,
    mseq: u64,
    ga: Vec<u16>,
    gk: u32,
}
const EMPTY: u64 = u64::MAX;
impl W {
    fn new(cap: usize, cfg: Cfg) -> Self {
        W {
            cfg,
            cap,
            w: (cap as f64 * cfg.window).max(1.0),
            map: HashMap::new(),
            window: VecDeque::new(),
            slots: vec![EMPTY; cap],
            free: (0..cap).rev().collect(),
            hand: 0,
            main_len: 0,
            slru: std::env::var("SLRU").ok().map(|v| v.parse().unwrap()),
            cprot: std::env::var("CPROT").ok().map(|v| v.parse().unwrap()),
            pc: 0,
            prob: Default::default(),
            prot: Default::default(),
            stamps: HashMap::new(),
            clock_t: 0,
            sk: Sketch::new(cap, cfg.mult, cfg.reset),
            sh: 0,
            sm: 0,
            prev: 0.0,
            step: if cfg.up {
                cfg.stepp * cap as f64
            } else {
                -(cfg.stepp * cap as f64)
            },
            gw: VecDeque::new(),
            gws: HashSet::new(),
            gm: VecDeque::new(),
            gms: HashSet::new(),
            dw: HashMap::new(),
            dm: HashMap::new(),
            wseq: 0,
            mseq: 0,
            ga: vec![
                0;
                ((cap as f64 * cfg.garr) as usize).max(
                    std::env::var("GFLOOR")
                        .map(|s| s.parse().unwrap())
                        .unwrap_or(1)
                )
            ],
            gk: (cap / 64).max(1).ilog2(),
        }
    }
    fn ghost(q: &mut VecDeque<u64>, s: &mut HashSet<u64>, k: u64, cap: usize) {
        if s.insert(k) {
            q.push_back(k);
        }
        while q.len() > cap {
            let o = q.pop_front().unwrap();
            s.remove(&o);
        }
    }
    fn maxw(&self) -> f64 {
        let fl: f64 = std::env::var("WFLOOR")
            .map(|s| s.parse().unwrap())
            .unwrap_or(0.0);
        (self.cap as f64 * self.cfg.max_window)
            .max(fl)
            .min(self.cap as f64 * 0.8)
    }
    fn gput(&mut self, h: u64, win: bool) {
        if self.cfg.garr == 0.0 {
            if win {
                self.dw.insert(h, self.wseq);
            } else {
                self.dm.insert(h, self.mseq);
            }
            return;
        }
        let i = (h >> 32) as usize % self.ga.len();
        let seq = if win { self.wseq } else { self.mseq };
        let tick = ((seq >> self.gk) & 0xff) as u16;
        // Region bit, 7-bit fingerprint, 8-bit tick. An empty record (0) matches a key whose
        // fingerprint is 0; the model accepts that (the shipped ghost never stores fingerprint 0).
        self.ga[i] = ((win as u16) << 15) | (((h & 0x7f) as u16) << 8) | tick;
    }
    fn gget(&mut self, h: u64) -> (Option<f64>, Option<f64>) {
        if self.cfg.garr == 0.0 {
            return (
                self.dw.remove(&h).map(|s| (self.wseq - s) as f64),
                self.dm.remove(&h).map(|s| (self.mseq - s) as f64),
            );
        }
        let i = (h >> 32) as usize % self.ga.len();
        let e = self.ga[i];
        if ((e >> 8) & 0x7f) as u64 != h & 0x7f {
            return (None, None);
        }
        self.ga[i] = 0;
        let win = e >> 15 == 1;
        let seq = if win { self.wseq } else { self.mseq };
        let now = ((seq >> self.gk) & 0xff) as u16;
        let d = (((now + 256 - (e & 0xff)) & 0xff) as u64) << self.gk;
        let d = d as f64;
        if win {
            (Some(d), None)
        } else {
            (None, Some(d))
        }
    }
    fn victim(&mut self) -> u64 {
        if self.slru.is_some() {
            let seg = if self.prob.is_empty() {
                &self.prot
            } else {
                &self.prob
            };
            return *seg.iter().next().unwrap().1;
        }
        if let Some(p) = self.cprot {
            let maxp = (p * self.cap as f64) as usize;
            let mut steps = 0;
            loop {
                let i = self.hand;
                self.hand = (self.hand + 1) % self.cap;
                steps += 1;
                let k = self.slots[i];
                if k == EMPTY {
                    continue;
                }
                let e = self.map.get_mut(&k).unwrap();
                if e.refb {
                    e.refb = false;
                    if !self.cfg.every_hit {
                        self.sk.inc(mix(k));
                    }
                    if e.f == 0 {
                        e.f = 1;
                        self.pc += 1;
                    }
                    continue;
                }
                if e.f == 1 {
                    if self.pc > maxp || steps > self.cap {
                        e.f = 0;
                        self.pc -= 1;
                    }
                    continue;
                }
                return k;
            }
        }
        loop {
            let i = self.hand;
            self.hand = (self.hand + 1) % self.cap;
            let k = self.slots[i];
            if k == EMPTY {
                continue;
            }
            let e = self.map.get_mut(&k).unwrap();
            if e.refb {
                e.refb = false;
                if e.f + 1 < self.cfg.bits {
                    e.f += 1;
                }
                if !self.cfg.every_hit {
                    self.sk.inc(mix(k));
                }
                continue;
            }
            if e.f > 0 {
                e.f -= 1;
                continue;
            }
            return k;
        }
    }
    /// Takes `k` out of its SLRU segment (its stamp stays in `stamps`).
    fn slru_unlink(&mut self, k: u64) {
        let (protected, t) = self.stamps[&k];
        if protected {
            self.prot.remove(&t);
        } else {
            self.prob.remove(&t);
        }
    }

    fn to_main(&mut self, k: u64) {
        if self.slru.is_some() {
            self.clock_t += 1;
            self.prob.insert(self.clock_t, k);
            self.stamps.insert(k, (false, self.clock_t));
            self.main_len += 1;
            self.map.get_mut(&k).unwrap().in_window = false;
            return;
        }
        let s = self.free.pop().unwrap();
        self.slots[s] = k;
        self.main_len += 1;
        let e = self.map.get_mut(&k).unwrap();
        e.in_window = false;
        e.slot = s;
    }
    fn evict_main(&mut self, v: u64) {
        let e = self.map.remove(&v).unwrap();
        if self.slru.is_some() {
            self.slru_unlink(v);
            self.stamps.remove(&v);
        } else {
            self.slots[e.slot] = EMPTY;
            self.free.push(e.slot);
            if self.cprot.is_some() && e.f == 1 {
                self.pc -= 1;
            }
        }
        self.main_len -= 1;
        if self.cfg.adapt == Adapt::Ghost {
            Self::ghost(&mut self.gm, &mut self.gms, mix(v), self.cap);
        }
        self.mseq += 1;
        if self.cfg.adapt == Adapt::Dist {
            self.gput(mix(v), false);
        }
    }
    fn access(&mut self, k: u64) -> bool {
        let h = mix(k);
        if let Some(e) = self.map.get_mut(&k) {
            let in_main = !e.in_window;
            e.refb = true;
            if in_main && self.slru.is_some() {
                e.refb = false;
                if !self.cfg.every_hit {
                    self.sk.inc(h);
                }
                self.slru_unlink(k);
                self.clock_t += 1;
                self.prot.insert(self.clock_t, k);
                self.stamps.insert(k, (true, self.clock_t));
                let maxp = (self.slru.unwrap() * self.cap as f64) as usize;
                while self.prot.len() > maxp.max(1) {
                    let (&ot, &ok) = self.prot.iter().next().unwrap();
                    self.prot.remove(&ot);
                    self.clock_t += 1;
                    self.prob.insert(self.clock_t, ok);
                    self.stamps.insert(ok, (false, self.clock_t));
                }
            }
            let e = self.map.get_mut(&k).unwrap();
            if self.cfg.every_hit {
                self.sk.inc(h);
            }
            if h % self.cfg.sample == 0 {
                self.sh += 1;
                self.adapt();
            }
            return true;
        }
        let sampled = h % self.cfg.sample == 0;
        if sampled {
            self.sm += 1;
        }
        if self.cfg.adapt == Adapt::Ghost {
            let d = (self.cap as f64 * 0.01).max(1.0);
            if self.gws.contains(&h) {
                self.w = (self.w + d).min(self.maxw());
            } else if self.gms.contains(&h) {
                self.w = (self.w - d).max(1.0);
            }
        }
        if self.cfg.adapt == Adapt::Dist {
            let d = (self.cap as f64 * self.cfg.stepp).max(1.0);
            let room = self.cap as f64 - self.w;
            let (hw, hm) = self.gget(h);
            if hw.is_some_and(|x| x <= room * self.cfg.decay) {
                self.w = (self.w + d).min(self.maxw());
            } else if hm.is_some_and(|x| x <= self.w * self.cfg.decay) {
                self.w = (self.w - d).max(1.0);
            }
        }
        self.sk.inc(h);
        if self.cfg.dbl {
            self.sk.inc(h);
        }
        self.map.insert(
            k,
            Ent {
                in_window: true,
                slot: 0,
                refb: false,
                f: 0,
            },
        );
        self.window.push_back(k);
        self.balance();
        if sampled {
            self.adapt();
        }
        false
    }
    fn balance(&mut self) {
        let wcap = self.w.round().max(1.0) as usize;
        while self.window.len() > wcap || self.window.len() + self.main_len > self.cap {
            if self.window.len() <= wcap {
                let v = self.victim();
                self.evict_main(v);
                continue;
            }
            let c = self.window.pop_front().unwrap();
            if self.cfg.lru_window {
                let e = self.map.get_mut(&c).unwrap();
                if e.refb {
                    e.refb = false;
                    if !self.cfg.every_hit {
                        self.sk.inc(mix(c));
                    }
                    self.window.push_back(c);
                    continue;
                }
            } else {
                let e = self.map.get_mut(&c).unwrap();
                if e.refb && !self.cfg.every_hit {
                    self.sk.inc(mix(c));
                }
                e.refb = false;
            }
            if self.window.len() + self.main_len + 1 <= self.cap {
                self.to_main(c);
                continue;
            }
            let v = self.victim();
            let (fc, fv) = (self.sk.freq(mix(c)), self.sk.freq(mix(v)));
            if fc > fv + self.cfg.margin || (self.cfg.tie_admit && fc == fv) {
                self.evict_main(v);
                self.to_main(c);
            } else {
                self.map.remove(&c);
                if self.cfg.adapt == Adapt::Ghost {
                    Self::ghost(&mut self.gw, &mut self.gws, mix(c), self.cap);
                }
                self.wseq += 1;
                if self.cfg.adapt == Adapt::Dist {
                    self.gput(mix(c), true);
                }
            }
        }
    }
    fn adapt(&mut self) {
        if self.cfg.adapt != Adapt::Hill
            || ((self.sh + self.sm) as f64)
                < self.cfg.period * self.cap as f64 / self.cfg.sample as f64
        {
            return;
        }
        let hr = self.sh as f64 / (self.sh + self.sm) as f64;
        let ch = hr - self.prev;
        let amount = if ch >= 0.0 { self.step } else { -self.step };
        let next = if ch.abs() >= self.cfg.restart {
            self.cfg.stepp * self.cap as f64 * amount.signum()
        } else {
            self.cfg.decay * amount
        };
        self.prev = hr;
        self.step = next;
        self.sh = 0;
        self.sm = 0;
        self.w = (self.w + amount).clamp(1.0, self.maxw());
        self.balance();
    }
}

fn lru(keys: &[u64], cap: usize) -> f64 {
    // simple O(1) LRU via HashMap + stamp heap would be heavy; use linked hash via VecDeque lazy
    let mut stamp: HashMap<u64, u64> = HashMap::new();
    let mut q: VecDeque<(u64, u64)> = VecDeque::new();
    let mut hits = 0;
    let mut len = 0;
    for (t, &k) in keys.iter().enumerate() {
        let t = t as u64;
        if let Some(s) = stamp.get_mut(&k) {
            hits += 1;
            *s = t;
            q.push_back((k, t));
            continue;
        }
        stamp.insert(k, t);
        q.push_back((k, t));
        len += 1;
        while len > cap {
            let (ok, ot) = q.pop_front().unwrap();
            if stamp.get(&ok) == Some(&ot) {
                stamp.remove(&ok);
                len -= 1;
            }
        }
    }
    100.0 * hits as f64 / keys.len() as f64
}

fn main() {
    let readme = std::env::args().any(|a| a == "--readme");
    let mut owned: Vec<(&'static str, Vec<(usize, f64)>)> = Vec::new();
    if readme {
        let text = std::fs::read_to_string(format!(
            "{}/README.md",
            std::env::var("CLOCKLINE_TRACES").unwrap_or_else(|_| concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../shared/traces"
            )
            .to_string())
        ))
        .unwrap();
        let mut cur: Option<&'static str> = None;
        for line in text.lines() {
            if line.starts_with("**") && line.ends_with("**") {
                cur = Some(Box::leak(
                    line.trim_matches('*').to_string().into_boxed_str(),
                ));
                owned.push((cur.unwrap(), vec![]));
                continue;
            }
            if let Some(_) = cur {
                let f: Vec<&str> = line.split('|').map(|x| x.trim()).collect();
                if f.len() > 3 {
                    if let (Ok(c), Ok(l)) = (f[1].parse::<usize>(), f[2].parse::<f64>()) {
                        owned.last_mut().unwrap().1.push((c, l));
                    }
                }
            }
        }
    }
    let owned_refs: Vec<(&str, &[(usize, f64)])> =
        owned.iter().map(|(n, v)| (*n, v.as_slice())).collect();
    let builtin: &[(&str, &[(usize, f64)])] = &[
        (
            "lirs-loop",
            &[(250, 24.5), (500, 49.3), (750, 74.0), (1000, 98.7)],
        ),
        (
            "lirs-gli",
            &[(250, 16.0), (500, 32.0), (1000, 49.0), (1500, 53.4)],
        ),
        (
            "lirs-multi2",
            &[(100, 29.0), (400, 48.6), (800, 54.8), (1800, 68.0)],
        ),
        (
            "lirs-sprite",
            &[(100, 34.9), (200, 51.3), (600, 83.2), (1000, 90.6)],
        ),
        ("lirs-2_pools", &[(250, 50.8), (500, 52.0), (1000, 54.5)]),
        (
            "arc-OLTP",
            &[(250, 22.9), (1000, 35.7), (2000, 43.7), (15000, 64.8)],
        ),
        (
            "arc-P3",
            &[(25000, 14.5), (50000, 25.3), (100000, 40.1), (200000, 59.4)],
        ),
        (
            "corda-trace_vaultservice",
            &[(250, 33.3), (1000, 33.3), (5000, 33.3)],
        ),
        ("cache2k-web07", &[(500, 47.9), (2000, 57.9), (8000, 67.5)]),
    ];
    let targets: &[(&str, &[(usize, f64)])] = if readme { &owned_refs } else { builtin };
    let args: Vec<String> = std::env::args().collect();
    let get = |n: &str, d: f64| {
        args.iter()
            .position(|a| a == n)
            .map(|i| args[i + 1].parse().unwrap())
            .unwrap_or(d)
    };
    let adapt = match args
        .iter()
        .position(|a| a == "--adapt")
        .map(|i| args[i + 1].as_str())
    {
        Some("hill") => Adapt::Hill,
        Some("ghost") => Adapt::Ghost,
        Some("dist") => Adapt::Dist,
        _ => Adapt::None,
    };
    let cfg = Cfg {
        window: get("--window", 0.01),
        adapt,
        every_hit: args.iter().any(|a| a == "--every"),
        mult: get("--mult", 1.0),
        lru_window: args.iter().any(|a| a == "--lruw"),
        max_window: get("--maxw", 0.8),
        tie_admit: args.iter().any(|a| a == "--tie"),
        reset: get("--reset", 10.0),
        bits: get("--bits", 1.0) as u8,
        period: get("--period", 10.0),
        stepp: get("--stepp", 0.0625),
        up: args.iter().any(|a| a == "--up"),
        restart: get("--restart", 0.05),
        decay: get("--decay", 0.98),
        sample: get("--sample", 1.0) as u64,
        margin: get("--margin", 0.0) as u8,
        dbl: args.iter().any(|a| a == "--dbl"),
        garr: get("--garr", 0.0),
    };
    let only: Option<&String> = args
        .iter()
        .position(|a| a == "--trace")
        .map(|i| &args[i + 1]);
    let show_lru = args.iter().any(|a| a == "--lru");
    eprintln!("{cfg:?}");
    let (mut misses, mut worst) = (0, 0.0f64);
    let mut handles = vec![];
    for &(name, pts) in targets {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let keys = std::sync::Arc::new(load(name));
        for &(cap, tgt) in pts {
            let keys = keys.clone();
            handles.push(std::thread::spawn(move || {
                let mut c = W::new(cap, cfg);
                let hits = keys.iter().filter(|&&k| c.access(k)).count();
                let hr = 100.0 * hits as f64 / keys.len() as f64;
                let l = if show_lru { lru(&keys, cap) } else { f64::NAN };
                (name, cap, tgt, hr, l, c.w / cap as f64)
            }));
        }
    }
    for h in handles {
        let (name, cap, tgt, hr, l, w) = h.join().unwrap();
        let d = hr - tgt;
        if d < -1.0 {
            misses += 1;
        }
        worst = worst.min(d);
        println!(
            "{name:26} {cap:7} {hr:6.2} target {tgt:5.1} diff {d:+6.2} {} w={w:.3} {}",
            if d < -1.0 { "MISS" } else { "" },
            if show_lru {
                format!("lru {l:.2}")
            } else {
                String::new()
            }
        );
    }
    println!("misses {misses} worst {worst:.2}");
}
