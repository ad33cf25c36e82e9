//! Tests of `modbal_info::discrete`. Every reference number names its source.

use candle_core::{DType, Device, Tensor, Var};
use modbal_info::discrete::*;
use modbal_info::InfoError;
use modbal_tensors::ops::softmax;
use modbal_tensors::SeededRng;

const TOL: f64 = 1e-12;

fn close(a: f64, b: f64, tol: f64, what: &str) {
    assert!(
        (a - b).abs() <= tol,
        "{what}: got {a}, expected {b} (|diff| = {:e} > {tol:e})",
        (a - b).abs()
    );
}

fn nmi(x: &[u32], y: &[u32], n: Normalization) -> f64 {
    normalized_mutual_information(x, y, n).unwrap()
}

/// The formula-defined vectors of the N = 60 reference case (same in the Python snippets).
fn formula_case() -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    let x: Vec<u32> = (0..60u32).map(|i| (7 * i * i + 3) % 5).collect();
    let y: Vec<u32> = (0..60u32).map(|i| (x[i as usize] + i / 4) % 4).collect();
    let z: Vec<u32> = (0..60u32).map(|i| (5 * i + i / 7) % 3).collect();
    (x, y, z)
}

fn random_labels(rng: &mut SeededRng, n: usize, k: usize) -> Vec<u32> {
    (0..n).map(|_| rng.below(k) as u32).collect()
}

// ---------------------------------------------------------------------------------------------
// plug-in estimators vs scikit-learn 1.9.1 / SciPy 1.17.1
// ---------------------------------------------------------------------------------------------

// Computed with scikit-learn 1.9.1 and SciPy 1.17.1:
//   from sklearn.metrics import mutual_info_score as mis, normalized_mutual_info_score as nmi
//   from scipy.stats import entropy
//   a = [0,0,1,1,2,2,0,1,2,2]; b = [1,1,0,0,2,2,2,0,1,1]
//   mis(a, b)                                  # 0.6206868526328018
//   nmi(a, b, average_method="geometric")      # 0.5700127345819985
//   nmi(a, b, average_method="arithmetic")     # 0.5700127345819985
//   entropy(np.unique(a, return_counts=True)[1])  # 1.0888999753452238 (same for b)
#[test]
fn sklearn_equal_entropies() {
    let a = [0, 0, 1, 1, 2, 2, 0, 1, 2, 2];
    let b = [1, 1, 0, 0, 2, 2, 2, 0, 1, 1];
    close(
        mutual_information(&a, &b).unwrap(),
        0.6206868526328018,
        TOL,
        "MI",
    );
    close(
        nmi(&a, &b, Normalization::Geometric),
        0.5700127345819985,
        TOL,
        "NMI geo",
    );
    close(
        nmi(&a, &b, Normalization::Arithmetic),
        0.5700127345819985,
        TOL,
        "NMI arith",
    );
    close(entropy(&a).unwrap(), 1.0888999753452238, TOL, "H(a)");
    close(entropy(&b).unwrap(), 1.0888999753452238, TOL, "H(b)");

    // Same with scikit-learn 1.9.1: c = [0,1,2,3]*3; d = [0,0,0,1,1,1,2,2,2,3,3,3]
    //   mis(c, d) = 0.2876820724517807; nmi(c, d) (geometric/arithmetic) = 0.20751874963942174
    //   entropy(counts(c)) = 1.3862943611198906 (= log 4, closed form)
    let c: Vec<u32> = (0..12).map(|i| i % 4).collect();
    let d: Vec<u32> = (0..12).map(|i| i / 3).collect();
    close(
        mutual_information(&c, &d).unwrap(),
        0.2876820724517807,
        TOL,
        "MI c,d",
    );
    close(
        nmi(&c, &d, Normalization::Geometric),
        0.20751874963942174,
        TOL,
        "NMI geo c,d",
    );
    close(
        nmi(&c, &d, Normalization::Arithmetic),
        0.20751874963942174,
        TOL,
        "NMI arith c,d",
    );
    close(entropy(&c).unwrap(), 4f64.ln(), TOL, "H(c) = log 4");
}

// Computed with scikit-learn 1.9.1 / SciPy 1.17.1 (unequal entropies, so the normalisers differ):
//   x = [3,3,5,7,7,5,3]; y = [1,1,0,2,2,1,1]
//   mis(x, y) = 0.7576578395239786
//   nmi(x, y, average_method=m) for m in geometric, arithmetic, max, min:
//     0.7461105806785318, 0.7447395504214406, 0.7021902790329868, 0.7927779908418593
//   entropy(counts(x)) = 1.0789922078775833; entropy(counts(y)) = 0.9556998911125343
#[test]
fn sklearn_unequal_entropies_all_normalizations() {
    let x = [3, 3, 5, 7, 7, 5, 3];
    let y = [1, 1, 0, 2, 2, 1, 1];
    close(
        mutual_information(&x, &y).unwrap(),
        0.7576578395239786,
        TOL,
        "MI",
    );
    close(
        nmi(&x, &y, Normalization::Geometric),
        0.7461105806785318,
        TOL,
        "geo",
    );
    close(
        nmi(&x, &y, Normalization::Arithmetic),
        0.7447395504214406,
        TOL,
        "arith",
    );
    close(
        nmi(&x, &y, Normalization::Max),
        0.7021902790329868,
        TOL,
        "max",
    );
    close(
        nmi(&x, &y, Normalization::Min),
        0.7927779908418593,
        TOL,
        "min",
    );
    close(entropy(&x).unwrap(), 1.0789922078775833, TOL, "H(x)");
    close(entropy(&y).unwrap(), 0.9556998911125343, TOL, "H(y)");
    assert_eq!(Normalization::default(), Normalization::Geometric);
}

// Computed with scikit-learn 1.9.1 / SciPy 1.17.1 on the formula vectors (N = 60):
//   x = [(7*i*i+3)%5 for i in range(60)]; y = [(x[i] + i//4)%4 for i in range(60)]
//   z = [(5*i+i//7)%3 for i in range(60)]
//   for a, b in [(x,y),(x,z),(y,z)]: mis(a,b), nmi(a,b,"geometric"), nmi(a,b,"arithmetic")
//     (x,y): 0.0061586243282803765 0.00510293886984413  0.005057079021877267
//     (x,z): 0.0022477162250906235 0.00210872901229827  0.0021086157612124025
//     (y,z): 0.057773856972475876  0.047376928595485986 0.04701380916644769
//   entropy of x, y, z: 1.0549201679861442 1.3807247177820046 1.0770151674476027
#[test]
fn sklearn_formula_case() {
    let (x, y, z) = formula_case();
    let refs = [
        (
            &x,
            &y,
            0.0061586243282803765,
            0.00510293886984413,
            0.005057079021877267,
        ),
        (
            &x,
            &z,
            0.0022477162250906235,
            0.00210872901229827,
            0.0021086157612124025,
        ),
        (
            &y,
            &z,
            0.057773856972475876,
            0.047376928595485986,
            0.04701380916644769,
        ),
    ];
    for (i, (a, b, mi, geo, ari)) in refs.into_iter().enumerate() {
        close(
            mutual_information(a, b).unwrap(),
            mi,
            TOL,
            &format!("MI {i}"),
        );
        close(
            nmi(a, b, Normalization::Geometric),
            geo,
            TOL,
            &format!("geo {i}"),
        );
        close(
            nmi(a, b, Normalization::Arithmetic),
            ari,
            TOL,
            &format!("ari {i}"),
        );
    }
    close(entropy(&x).unwrap(), 1.0549201679861442, TOL, "H(x)");
    close(entropy(&y).unwrap(), 1.3807247177820046, TOL, "H(y)");
    close(entropy(&z).unwrap(), 1.0770151674476027, TOL, "H(z)");
}

/// Large and sparse label values exercise the other counting paths (the grouped joint table and
/// the sort-based relabelling); the estimates are invariant under relabelling, so the
/// scikit-learn numbers of `sklearn_formula_case` apply.
#[test]
fn relabelling_invariance_and_large_labels() {
    let (x, y, z) = formula_case();
    let x1000: Vec<u32> = x.iter().map(|&v| v * 1000 + 7).collect();
    let xbig: Vec<u32> = x.iter().map(|&v| v * 800_000_000 + 11).collect();
    let ybig: Vec<u32> = y.iter().map(|&v| u32::MAX - v).collect();
    for (name, a) in [("x*1000", &x1000), ("x*8e8", &xbig)] {
        close(
            mutual_information(a, &y).unwrap(),
            0.0061586243282803765,
            TOL,
            name,
        );
        close(
            mutual_information(a, &ybig).unwrap(),
            0.0061586243282803765,
            TOL,
            name,
        );
        close(
            nmi(a, &y, Normalization::Geometric),
            0.00510293886984413,
            TOL,
            name,
        );
        close(entropy(a).unwrap(), 1.0549201679861442, TOL, name);
        close(
            conditional_mutual_information(a, &ybig, &z).unwrap(),
            0.048835298299078275,
            TOL,
            name,
        );
    }
}

// scikit-learn 1.9.1: normalized_mutual_info_score([0,0],[1,1]) == 1.0,
// normalized_mutual_info_score([0,0,0],[0,1,2]) == 0.0, normalized_mutual_info_score([5],[9]) == 1.0,
// mutual_info_score([0,0,0],[0,1,2]) == 0.0.
#[test]
fn degenerate_nmi_follows_sklearn() {
    for n in [
        Normalization::Geometric,
        Normalization::Arithmetic,
        Normalization::Max,
        Normalization::Min,
    ] {
        assert_eq!(nmi(&[0, 0], &[1, 1], n), 1.0, "both constant, {n:?}");
        assert_eq!(nmi(&[0, 0, 0], &[0, 1, 2], n), 0.0, "one constant, {n:?}");
        assert_eq!(nmi(&[0, 1, 2], &[4, 4, 4], n), 0.0, "other constant, {n:?}");
        assert_eq!(nmi(&[5], &[9], n), 1.0, "N = 1, {n:?}");
        // Closed form: identical non-constant labelings up to renaming have NMI 1.
        close(nmi(&[0, 0, 1, 2], &[7, 7, 3, 1], n), 1.0, 1e-15, "renamed");
    }
    assert_eq!(mutual_information(&[0, 0, 0], &[0, 1, 2]).unwrap(), 0.0);
    assert_eq!(entropy(&[4, 4, 4]).unwrap(), 0.0);
    assert_eq!(entropy(&[4]).unwrap(), 0.0);
    assert_eq!(mutual_information(&[4], &[2]).unwrap(), 0.0);
}

// ---------------------------------------------------------------------------------------------
// CMI, NCMI, conditional entropy, interaction information
// ---------------------------------------------------------------------------------------------

// Computed with NumPy 2.4.6 on the formula vectors (x, y, z as in `sklearn_formula_case`):
//   def cmi(x,y,z):
//       s = 0.0
//       for a,b,c in set(zip(x,y,z)):
//           nxyz = sum((x==a)&(y==b)&(z==c)); nz = sum(z==c)
//           nxz = sum((x==a)&(z==c)); nyz = sum((y==b)&(z==c))
//           s += nxyz/n*np.log(nxyz*nz/(nxz*nyz))
//       return s
//   def ch(x,z): return sum(nxz/n*np.log(nz/nxz) over the cells of (x,z))
//   cmi(x,y,z) = 0.048835298299078275; ch(x,z) = 1.0526724517610533; ch(y,z) = 1.3229508608095284
//   cmi/sqrt(ch(x,z)*ch(y,z)) = 0.041382369998381054
//   mis(x,y) - cmi(x,y,z) = -0.0426766739707979
#[test]
fn cmi_ncmi_vs_numpy() {
    let (x, y, z) = formula_case();
    close(
        conditional_mutual_information(&x, &y, &z).unwrap(),
        0.048835298299078275,
        TOL,
        "CMI",
    );
    close(
        conditional_entropy(&x, &z).unwrap(),
        1.0526724517610533,
        TOL,
        "H(x|z)",
    );
    close(
        conditional_entropy(&y, &z).unwrap(),
        1.3229508608095284,
        TOL,
        "H(y|z)",
    );
    close(ncmi(&x, &y, &z).unwrap(), 0.041382369998381054, TOL, "NCMI");
    close(
        interaction_information(&x, &y, &z).unwrap(),
        -0.0426766739707979,
        TOL,
        "II",
    );
    // ARM eq 10 literally: NMI_geo(x;y) − NCMI(x;y|z) (both references above).
    close(
        normalized_interaction_information(&x, &y, &z).unwrap(),
        0.00510293886984413 - 0.041382369998381054,
        TOL,
        "normalised II",
    );
}

/// Closed-form identities: CMI = H(X,Z) + H(Y,Z) − H(X,Y,Z) − H(Z),
/// H(X|Y) = H(X,Y) − H(Y), I(X;Y) = H(X) + H(Y) − H(X,Y), on random label vectors.
#[test]
fn cmi_matches_entropy_identity() {
    let mut rng = SeededRng::new(11);
    for (n, kx, ky, kz) in [
        (50, 3, 4, 2),
        (500, 6, 5, 7),
        (4096, 10, 10, 10),
        (7, 9, 9, 9),
    ] {
        let x = random_labels(&mut rng, n, kx);
        let y = random_labels(&mut rng, n, ky);
        let z = random_labels(&mut rng, n, kz);
        let xz = joint_symbols(&x, &z).unwrap();
        let yz = joint_symbols(&y, &z).unwrap();
        let h_xz = entropy(&xz).unwrap();
        let h_yz = entropy(&yz).unwrap();
        let h_xyz = joint_entropy(&xz, &y).unwrap();
        let h_z = entropy(&z).unwrap();
        close(
            conditional_mutual_information(&x, &y, &z).unwrap(),
            h_xz + h_yz - h_xyz - h_z,
            1e-12,
            &format!("CMI identity n={n}"),
        );
        close(
            conditional_entropy(&x, &y).unwrap(),
            joint_entropy(&x, &y).unwrap() - entropy(&y).unwrap(),
            1e-12,
            "H(X|Y) identity",
        );
        close(
            mutual_information(&x, &y).unwrap(),
            entropy(&x).unwrap() + entropy(&y).unwrap() - joint_entropy(&x, &y).unwrap(),
            1e-12,
            "MI identity",
        );
        close(
            h_xz,
            joint_entropy(&x, &z).unwrap(),
            1e-15,
            "joint_symbols entropy",
        );
    }
}

/// Chain rule I(X; (Y, Z)) = I(X; Z) + I(X; Y|Z) (closed-form identity), (Y, Z) as one symbol.
#[test]
fn chain_rule() {
    let mut rng = SeededRng::new(2024);
    for trial in 0..40 {
        let n = 1 + rng.below(600);
        let (kx, ky, kz) = (1 + rng.below(8), 1 + rng.below(8), 1 + rng.below(8));
        let x = random_labels(&mut rng, n, kx);
        let mut y = random_labels(&mut rng, n, ky);
        let z = random_labels(&mut rng, n, kz);
        if trial % 3 == 0 {
            // Make Y depend on X so that the terms are not all ~0.
            for i in 0..n {
                if rng.uniform() < 0.6 {
                    y[i] = x[i] % ky as u32;
                }
            }
        }
        let yz = joint_symbols(&y, &z).unwrap();
        let lhs = mutual_information(&x, &yz).unwrap();
        let rhs = mutual_information(&x, &z).unwrap()
            + conditional_mutual_information(&x, &y, &z).unwrap();
        close(
            lhs,
            rhs,
            1e-10,
            &format!("chain rule trial {trial} (n={n})"),
        );
    }
}

/// XOR: X, Y independent fair bits, Z = X xor Y: I(X;Y) = 0, I(X;Y|Z) = log 2 (closed form),
/// so the interaction information is −log 2 (synergy) and NCMI = 1.
#[test]
fn xor_synergy() {
    let x = [0, 0, 1, 1];
    let y = [0, 1, 0, 1];
    let z = [0, 1, 1, 0];
    close(mutual_information(&x, &y).unwrap(), 0.0, 1e-15, "MI");
    close(
        conditional_mutual_information(&x, &y, &z).unwrap(),
        2f64.ln(),
        1e-15,
        "CMI",
    );
    close(
        interaction_information(&x, &y, &z).unwrap(),
        -(2f64.ln()),
        1e-15,
        "II",
    );
    close(ncmi(&x, &y, &z).unwrap(), 1.0, 1e-15, "NCMI");
    close(
        normalized_interaction_information(&x, &y, &z).unwrap(),
        -1.0,
        1e-15,
        "normalised II",
    );
}

/// Redundancy: X = Y = Z, a fair bit: I(X;Y) = log 2, I(X;Y|Z) = 0 → II = +log 2 (closed form).
#[test]
fn redundancy_sign() {
    let x = [0, 1, 0, 1, 1, 0];
    close(
        interaction_information(&x, &x, &x).unwrap(),
        2f64.ln(),
        1e-15,
        "II",
    );
    assert_eq!(conditional_mutual_information(&x, &x, &x).unwrap(), 0.0);
    assert_eq!(ncmi(&x, &x, &x).unwrap(), 0.0);
}

#[test]
fn bounds_on_random_inputs() {
    let mut rng = SeededRng::new(5);
    let norms = [
        Normalization::Geometric,
        Normalization::Arithmetic,
        Normalization::Max,
        Normalization::Min,
    ];
    for trial in 0..300 {
        let n = 1 + rng.below(200);
        let (kx, ky, kz) = (1 + rng.below(6), 1 + rng.below(6), 1 + rng.below(6));
        let x = random_labels(&mut rng, n, kx);
        let mut y = random_labels(&mut rng, n, ky);
        let z = random_labels(&mut rng, n, kz);
        if trial % 2 == 0 {
            for i in 0..n {
                if rng.uniform() < 0.5 {
                    y[i] = (x[i] + z[i]) % ky as u32;
                }
            }
        }
        let mi = mutual_information(&x, &y).unwrap();
        let hx = entropy(&x).unwrap();
        let hy = entropy(&y).unwrap();
        assert!(mi >= 0.0 && mi <= hx.min(hy) + 1e-12, "MI {mi} H {hx} {hy}");
        for nm in norms {
            let v = nmi(&x, &y, nm);
            assert!((0.0..=1.0).contains(&v), "NMI {nm:?} = {v}");
        }
        let cmi = conditional_mutual_information(&x, &y, &z).unwrap();
        let hxz = conditional_entropy(&x, &z).unwrap();
        let hyz = conditional_entropy(&y, &z).unwrap();
        assert!(cmi >= 0.0 && cmi <= hxz.min(hyz) + 1e-12, "CMI {cmi}");
        let nc = ncmi(&x, &y, &z).unwrap();
        assert!((0.0..=1.0).contains(&nc), "NCMI {nc}");
        let ii = normalized_interaction_information(&x, &y, &z).unwrap();
        assert!((-1.0..=1.0).contains(&ii), "normalised II {ii}");
        // Interaction information is symmetric (closed-form identity).
        let a = interaction_information(&x, &y, &z).unwrap();
        let b = interaction_information(&x, &z, &y).unwrap();
        let c = interaction_information(&z, &y, &x).unwrap();
        close(a, b, 1e-12, "II symmetry xzy");
        close(a, c, 1e-12, "II symmetry zyx");
    }
}

#[test]
fn degenerate_conditional_cases() {
    let (x, y, _) = formula_case();
    // Constant Z: I(X;Y|Z) = I(X;Y) and NCMI = geometric NMI (closed form).
    let zc = vec![3u32; x.len()];
    close(
        conditional_mutual_information(&x, &y, &zc).unwrap(),
        0.0061586243282803765,
        TOL,
        "CMI, constant Z (sklearn MI)",
    );
    close(
        ncmi(&x, &y, &zc).unwrap(),
        0.00510293886984413,
        TOL,
        "NCMI, constant Z (sklearn NMI)",
    );
    // X a function of Z: H(X|Z) = 0, CMI = 0, NCMI = 0 (documented).
    assert_eq!(conditional_mutual_information(&x, &y, &x).unwrap(), 0.0);
    assert_eq!(ncmi(&x, &y, &x).unwrap(), 0.0);
    assert_eq!(conditional_entropy(&x, &x).unwrap(), 0.0);
    // N = 1 and everything constant: CMI = NCMI = 0, II = NMI − NCMI = 1 − 0.
    assert_eq!(
        conditional_mutual_information(&[1], &[2], &[3]).unwrap(),
        0.0
    );
    assert_eq!(ncmi(&[1], &[2], &[3]).unwrap(), 0.0);
    assert_eq!(ncmi(&[1, 1], &[2, 2], &[3, 3]).unwrap(), 0.0);
    assert_eq!(interaction_information(&[1], &[2], &[3]).unwrap(), 0.0);
    assert_eq!(
        normalized_interaction_information(&[1], &[2], &[3]).unwrap(),
        1.0
    );
}

fn assert_input_err<T: std::fmt::Debug>(r: modbal_info::Result<T>, needles: &[&str]) {
    match r {
        Err(InfoError::Input(m)) => {
            for n in needles {
                assert!(m.contains(n), "message {m:?} lacks {n:?}");
            }
        }
        other => panic!("expected InfoError::Input, got {other:?}"),
    }
}

#[test]
fn errors() {
    assert_input_err(mutual_information(&[0, 1, 2], &[0, 1]), &["3", "2"]);
    assert_input_err(
        normalized_mutual_information(&[0, 1], &[0], Normalization::Geometric),
        &["2", "1"],
    );
    assert_input_err(
        conditional_mutual_information(&[0, 1], &[0, 1], &[0, 1, 1, 0, 1]),
        &["2", "5"],
    );
    assert_input_err(ncmi(&[0], &[0, 1, 1, 1], &[0]), &["1", "4"]);
    assert_input_err(entropy(&[]), &["empty"]);
    assert_input_err(mutual_information(&[], &[]), &["empty"]);
    assert_input_err(interaction_information(&[], &[], &[]), &["empty"]);
    assert_input_err(joint_symbols(&[0], &[]), &["1", "0"]);
    let b = EqualWidthBins::new(4).unwrap();
    assert_input_err(
        discretize(&[0.0, 1.0, f64::NAN, 2.0], b),
        &["position 2", "NaN"],
    );
    assert_input_err(discretize(&[0.0, f64::INFINITY], b), &["position 1", "inf"]);
    assert_input_err(discretize(&[], b), &["empty"]);
    assert_input_err(
        mutual_information_binned(&[0.0, 1.0], &[0.0], b),
        &["2", "1"],
    );
    assert_input_err(
        cmi_binned(&[0.0, 1.0], &[0.0, 1.0], &[0.0, 1.0, 2.0], b),
        &["2", "3"],
    );
    assert!(matches!(EqualWidthBins::new(0), Err(InfoError::Param(_))));
    assert!(matches!(
        discretize(&[0.0, 1.0], EqualWidthBins { bins: 0 }),
        Err(InfoError::Param(_))
    ));
    assert!(matches!(
        nmi_binned(
            &[0.0, 1.0],
            &[0.0, 1.0],
            EqualWidthBins { bins: 0 },
            Normalization::Geometric
        ),
        Err(InfoError::Param(_))
    ));
    let t = Tensor::new(&[[0.0f64, 1.0], [f64::NAN, 2.0]], &Device::Cpu).unwrap();
    assert_input_err(discretize_tensor(&t, b), &["row 1", "column 0"]);
    let t3 = Tensor::zeros((2, 2, 2), DType::F32, &Device::Cpu).unwrap();
    assert_input_err(discretize_tensor(&t3, b), &["[2, 2, 2]"]);
}

// ---------------------------------------------------------------------------------------------
// binning
// ---------------------------------------------------------------------------------------------

#[test]
fn binning_closed_form_and_numpy() {
    // Closed form: 0..9 into 5 bins of width 1.8 → [0,0,1,1,2,2,3,3,4,4] (9 in the closed last bin).
    let v: Vec<f64> = (0..10).map(f64::from).collect();
    assert_eq!(
        discretize(&v, EqualWidthBins::new(5).unwrap()).unwrap(),
        vec![0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    );
    // Computed with NumPy 2.4.6 (values on the edges included):
    //   e = np.histogram_bin_edges(v, b)
    //   np.clip(np.searchsorted(e, v, side="right") - 1, 0, b - 1)
    // v = [0.1,0.7,0.3,0.25,0.9,0.55,0.4,0.05,0.85,0.6,0.3,0.75,0.2625,0.475,0.6875], b = 4
    //   → [0,3,1,0,3,2,1,0,3,2,1,3,1,2,3]
    let v = [
        0.1, 0.7, 0.3, 0.25, 0.9, 0.55, 0.4, 0.05, 0.85, 0.6, 0.3, 0.75, 0.2625, 0.475, 0.6875,
    ];
    assert_eq!(
        discretize(&v, EqualWidthBins::new(4).unwrap()).unwrap(),
        vec![0, 3, 1, 0, 3, 2, 1, 0, 3, 2, 1, 3, 1, 2, 3]
    );
    // v = [-3.0, 1e-3, 2.5, 2.5, 7.0, 0.1, -1.0, 4.9, 5.0, 6.999], b = 7
    //   → [0,2,3,3,6,2,1,5,5,6]  (bin 4 is empty)
    let v = [-3.0, 1e-3, 2.5, 2.5, 7.0, 0.1, -1.0, 4.9, 5.0, 6.999];
    assert_eq!(
        discretize(&v, EqualWidthBins::new(7).unwrap()).unwrap(),
        vec![0, 2, 3, 3, 6, 2, 1, 5, 5, 6]
    );
    // Documented degenerate cases: constant input and N = 1 → bin 0; one bin → all 0.
    assert_eq!(
        discretize(&[2.5; 4], EqualWidthBins::new(8).unwrap()).unwrap(),
        vec![0; 4]
    );
    assert_eq!(
        discretize(&[-1.0], EqualWidthBins::new(8).unwrap()).unwrap(),
        vec![0]
    );
    assert_eq!(
        discretize(&[3.0, -1.0, 9.0], EqualWidthBins::new(1).unwrap()).unwrap(),
        vec![0; 3]
    );
    // A range wider than f64::MAX still bins (min → 0, max → last, 0 in the middle bin).
    assert_eq!(
        discretize(&[-f64::MAX, 0.0, f64::MAX], EqualWidthBins::new(3).unwrap()).unwrap(),
        vec![0, 1, 2]
    );
    assert_eq!(EqualWidthBins::default().bins, 30);
}

#[test]
fn binned_estimators() {
    // x = 0..999 into 10 bins: bin k holds exactly 100k..100k+99 (floor(10 i / 999) = k), so
    // H(bin x) = log 10 and I(x; x) = I(x; 2x) = log 10 (closed form).
    let x: Vec<f64> = (0..1000).map(f64::from).collect();
    let x2: Vec<f64> = x.iter().map(|v| 2.0 * v).collect();
    let b = EqualWidthBins::new(10).unwrap();
    let counts = discretize(&x, b)
        .unwrap()
        .iter()
        .fold(vec![0; 10], |mut c, &s| {
            c[s as usize] += 1;
            c
        });
    assert_eq!(counts, vec![100; 10]);
    close(
        mutual_information_binned(&x, &x, b).unwrap(),
        10f64.ln(),
        1e-12,
        "MI(x;x)",
    );
    close(
        mutual_information_binned(&x, &x2, b).unwrap(),
        10f64.ln(),
        1e-12,
        "MI(x;2x)",
    );
    close(
        nmi_binned(&x, &x2, b, Normalization::Geometric).unwrap(),
        1.0,
        1e-12,
        "NMI(x;2x)",
    );
    // Constant input: both constant → NMI 1, one constant → 0 (scikit-learn 1.9.1 convention).
    let c = vec![4.0; 1000];
    assert_eq!(
        nmi_binned(&c, &c, b, Normalization::Geometric).unwrap(),
        1.0
    );
    assert_eq!(
        nmi_binned(&x, &c, b, Normalization::Arithmetic).unwrap(),
        0.0
    );
    // Conditioning on x itself removes everything: I(x; x | x) = 0; on a constant: I(x; x) = log 10.
    assert_eq!(cmi_binned(&x, &x2, &x, b).unwrap(), 0.0);
    close(
        cmi_binned(&x, &x2, &c, b).unwrap(),
        10f64.ln(),
        1e-12,
        "CMI | const",
    );
    assert_eq!(ncmi_binned(&x, &x2, &x, b).unwrap(), 0.0);
    close(
        ncmi_binned(&x, &x2, &c, b).unwrap(),
        1.0,
        1e-12,
        "NCMI | const",
    );
    // Noisy dependence sits strictly between 0 and log(bins).
    let mut rng = SeededRng::new(9);
    let u = rng.normal_vec(4096, 0.0, 1.0);
    let w: Vec<f64> = u.iter().map(|v| v + 0.5 * rng.normal()).collect();
    let mi = mutual_information_binned(&u, &w, b).unwrap();
    assert!(mi > 0.2 && mi < 10f64.ln(), "MI {mi}");
}

#[test]
fn tensor_binning() {
    let dev = Device::Cpu;
    let v: Vec<f64> = (0..10).map(f64::from).collect();
    let b = EqualWidthBins::new(5).unwrap();
    let t = Tensor::from_vec(v.clone(), 10, &dev).unwrap();
    assert_eq!(
        discretize_tensor(&t, b).unwrap(),
        discretize(&v, b).unwrap()
    );
    let t1 = Tensor::from_vec(v.clone(), (10, 1), &dev)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    assert_eq!(
        discretize_tensor(&t1, b).unwrap(),
        discretize(&v, b).unwrap()
    );
    // [N, 2]: the joint symbol distinguishes rows iff their bin pairs differ (and equals
    // joint_symbols of the per-column bins up to renaming: MI with it is log of its alphabet).
    let mut rng = SeededRng::new(3);
    let n = 300;
    let a = rng.uniform_vec(n, 0.0, 1.0);
    let c = rng.normal_vec(n, 0.0, 1.0);
    let mut flat = Vec::with_capacity(2 * n);
    for i in 0..n {
        flat.push(a[i]);
        flat.push(c[i]);
    }
    let t2 = Tensor::from_vec(flat, (n, 2), &dev).unwrap();
    let b4 = EqualWidthBins::new(4).unwrap();
    let j = discretize_tensor(&t2, b4).unwrap();
    let ba = discretize(&a, b4).unwrap();
    let bc = discretize(&c, b4).unwrap();
    for p in 0..n {
        for q in 0..n {
            assert_eq!(j[p] == j[q], (ba[p], bc[p]) == (ba[q], bc[q]));
        }
    }
    let js = joint_symbols(&ba, &bc).unwrap();
    close(
        mutual_information(&j, &js).unwrap(),
        entropy(&j).unwrap(),
        1e-12,
        "same partition",
    );
    // Per-feature average: (I(bin a; labels) + I(bin c; labels)) / 2.
    let labels: Vec<u32> = ba.iter().map(|&s| s / 2).collect();
    let expect = 0.5
        * (mutual_information(&ba, &labels).unwrap() + mutual_information(&bc, &labels).unwrap());
    close(
        mean_per_feature_mi_binned(&t2, &labels, b4).unwrap(),
        expect,
        1e-15,
        "mean per-feature MI",
    );
    assert_input_err(
        mean_per_feature_mi_binned(&t2, &labels[..10], b4),
        &["300", "10"],
    );
}

// ---------------------------------------------------------------------------------------------
// soft form
// ---------------------------------------------------------------------------------------------

fn one_hot(y: &[u32], k: usize) -> Tensor {
    let mut v = vec![0f64; y.len() * k];
    for (i, &c) in y.iter().enumerate() {
        v[i * k + c as usize] = 1.0;
    }
    Tensor::from_vec(v, (y.len(), k), &Device::Cpu).unwrap()
}

fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

/// With one-hot rows the soft joint is the empirical joint, so soft MI/NMI/CMI/NCMI equal the
/// plug-in values (closed-form consistency; ε = 1e-12 changes them by < 1e-10).
#[test]
fn soft_one_hot_equals_plug_in() {
    let x = [3u32, 3, 5, 7, 7, 5, 3];
    let y = [1u32, 1, 0, 2, 2, 1, 1];
    let p = one_hot(&x, 8);
    let q = one_hot(&y, 3);
    // scikit-learn 1.9.1 values (see sklearn_unequal_entropies_all_normalizations).
    close(
        scalar(&soft_mutual_information(&p, &q).unwrap()),
        0.7576578395239786,
        1e-10,
        "soft MI",
    );
    close(
        scalar(&soft_mutual_information_labels(&p, &y).unwrap()),
        0.7576578395239786,
        1e-10,
        "soft MI labels",
    );
    close(
        scalar(&soft_nmi(&p, &q).unwrap()),
        0.7461105806785318,
        1e-10,
        "soft NMI",
    );
    close(
        scalar(&soft_nmi_labels(&p, &y).unwrap()),
        0.7461105806785318,
        1e-10,
        "soft NMI labels",
    );
    // Labels with large values are compacted (same MI).
    let ybig: Vec<u32> = y.iter().map(|&v| v * 1_000_000).collect();
    close(
        scalar(&soft_mutual_information_labels(&p, &ybig).unwrap()),
        0.7576578395239786,
        1e-10,
        "soft MI big labels",
    );

    let (x, y, z) = formula_case();
    let (px, py, pz) = (one_hot(&x, 5), one_hot(&y, 4), one_hot(&z, 3));
    // NumPy reference of cmi_ncmi_vs_numpy.
    close(
        scalar(&soft_conditional_mutual_information(&px, &py, &pz).unwrap()),
        0.048835298299078275,
        1e-10,
        "soft CMI",
    );
    close(
        scalar(&soft_ncmi(&px, &py, &pz).unwrap()),
        0.041382369998381054,
        1e-10,
        "soft NCMI",
    );
    // Per sample with one-hot p: plug-in pointwise MI log(n_xy N / (n_x n_y)) of each sample.
    let m = per_sample_pointwise_mi(&px, &y)
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    let n = x.len() as f64;
    for i in 0..x.len() {
        let nxy = (0..x.len())
            .filter(|&j| x[j] == x[i] && y[j] == y[i])
            .count() as f64;
        let nx = x.iter().filter(|&&v| v == x[i]).count() as f64;
        let ny = y.iter().filter(|&&v| v == y[i]).count() as f64;
        close(m[i], (nxy * n / (nx * ny)).ln(), 1e-9, "pointwise MI");
    }
    let mean = m.iter().sum::<f64>() / n;
    close(mean, 0.0061586243282803765, 1e-10, "mean pointwise = MI");
}

fn random_probs(rng: &mut SeededRng, n: usize, c: usize, scale: f64) -> Tensor {
    let logits = rng
        .randn((n, c), 0.0, scale, DType::F64, &Device::Cpu)
        .unwrap();
    softmax(&logits, 1).unwrap()
}

#[test]
fn soft_bounds_and_per_sample_decomposition() {
    let mut rng = SeededRng::new(77);
    for trial in 0..30 {
        let n = 1 + rng.below(128);
        let (c, c2, c3) = (1 + rng.below(6), 1 + rng.below(6), 1 + rng.below(4));
        let scale = [0.1, 1.0, 5.0][trial % 3];
        let p = random_probs(&mut rng, n, c, scale);
        let q = random_probs(&mut rng, n, c2, scale);
        let r = random_probs(&mut rng, n, c3, scale);
        let y = random_labels(&mut rng, n, c2);
        let mi = scalar(&soft_mutual_information(&p, &q).unwrap());
        let nmi = scalar(&soft_nmi(&p, &q).unwrap());
        let cmi = scalar(&soft_conditional_mutual_information(&p, &q, &r).unwrap());
        let nc = scalar(&soft_ncmi(&p, &q, &r).unwrap());
        assert!(mi >= 0.0 && mi.is_finite(), "soft MI {mi}");
        assert!((0.0..=1.0).contains(&nmi), "soft NMI {nmi}");
        assert!(cmi >= 0.0 && cmi.is_finite(), "soft CMI {cmi}");
        assert!((0.0..=1.0).contains(&nc), "soft NCMI {nc}");
        // Closed-form identity: the batch mean of the per-sample values is the soft MI.
        let m = per_sample_pointwise_mi(&p, &y).unwrap();
        assert_eq!(m.dims(), &[n]);
        let mean = scalar(&m.mean_all().unwrap());
        let mi_y = scalar(&soft_mutual_information_labels(&p, &y).unwrap());
        close(mean.max(0.0), mi_y, 1e-12, "mean per-sample = soft MI");
    }
}

/// The soft MI is differentiable w.r.t. the logits feeding the softmax; the gradient matches
/// central finite differences (h = 1e-6, f64).
#[test]
fn soft_mi_gradient() {
    let mut rng = SeededRng::new(1);
    let (n, c) = (16, 4);
    let logits0 = rng.normal_vec(n * c, 0.0, 1.5);
    let y: Vec<u32> = (0..n as u32).map(|i| i % 3).collect();
    let f = |l: &[f64]| -> f64 {
        let t = Tensor::from_vec(l.to_vec(), (n, c), &Device::Cpu).unwrap();
        scalar(&soft_mutual_information_labels(&softmax(&t, 1).unwrap(), &y).unwrap())
    };
    let var = Var::from_tensor(&Tensor::from_vec(logits0.clone(), (n, c), &Device::Cpu).unwrap())
        .unwrap();
    let p = softmax(var.as_tensor(), 1).unwrap();
    let mi = soft_mutual_information_labels(&p, &y).unwrap();
    let grads = mi.backward().unwrap();
    let g = grads
        .get(var.as_tensor())
        .expect("gradient reaches the logits")
        .flatten_all()
        .unwrap()
        .to_vec1::<f64>()
        .unwrap();
    assert!(g.iter().all(|v| v.is_finite()), "finite gradient");
    let norm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
    assert!(norm > 1e-3, "non-zero gradient, norm {norm}");
    let h = 1e-6;
    for k in [0, 5, 17, 42, 63] {
        let mut lp = logits0.clone();
        let mut lm = logits0.clone();
        lp[k] += h;
        lm[k] -= h;
        let fd = (f(&lp) - f(&lm)) / (2.0 * h);
        close(g[k], fd, 1e-7, &format!("d MI / d logit {k}"));
    }

    // The other soft estimators are differentiable too (f32 as in training).
    let var = Var::from_tensor(
        &rng.randn((n, c), 0.0, 1.0, DType::F32, &Device::Cpu)
            .unwrap(),
    )
    .unwrap();
    let p = softmax(var.as_tensor(), 1).unwrap();
    let q = random_probs(&mut rng, n, 3, 1.0)
        .to_dtype(DType::F32)
        .unwrap();
    let r = random_probs(&mut rng, n, 2, 1.0)
        .to_dtype(DType::F32)
        .unwrap();
    let losses = [
        soft_nmi(&p, &q).unwrap(),
        soft_ncmi(&p, &q, &r).unwrap(),
        soft_conditional_mutual_information(&p, &q, &r).unwrap(),
        per_sample_pointwise_mi(&p, &y).unwrap().mean_all().unwrap(),
    ];
    for (i, l) in losses.iter().enumerate() {
        assert_eq!(l.dtype(), DType::F32);
        let g = l.backward().unwrap();
        let g = g
            .get(var.as_tensor())
            .expect("gradient")
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(g.iter().all(|v| v.is_finite()), "loss {i}: finite gradient");
        assert!(g.iter().any(|v| *v != 0.0), "loss {i}: non-zero gradient");
    }
}

#[test]
fn soft_validation() {
    let dev = Device::Cpu;
    let good = Tensor::new(&[[0.5f64, 0.5], [0.2, 0.8]], &dev).unwrap();
    let bad_sum = Tensor::new(&[[0.5f64, 0.5], [0.3, 0.8]], &dev).unwrap();
    let negative = Tensor::new(&[[1.5f64, -0.5], [0.2, 0.8]], &dev).unwrap();
    let nan = Tensor::new(&[[0.5f64, 0.5], [f64::NAN, 0.8]], &dev).unwrap();
    let three = Tensor::new(&[[1.0f64, 0.0], [0.0, 1.0], [0.5, 0.5]], &dev).unwrap();
    assert_input_err(
        soft_mutual_information(&bad_sum, &good),
        &["row 1", "sums to"],
    );
    assert_input_err(soft_nmi(&good, &negative), &["(0, 1)", "negative"]);
    assert_input_err(
        soft_mutual_information_labels(&nan, &[0, 1]),
        &["(1, 0)", "NaN"],
    );
    assert_input_err(soft_mutual_information(&good, &three), &["2", "3"]);
    assert_input_err(per_sample_pointwise_mi(&good, &[0, 1, 1]), &["2", "3"]);
    assert_input_err(soft_ncmi(&good, &good, &three), &["2", "3"]);
    let rank1 = Tensor::new(&[0.5f64, 0.5], &dev).unwrap();
    assert_input_err(soft_nmi_labels(&rank1, &[0, 1]), &["[2]"]);
    // Within the 1e-4 tolerance is accepted.
    let almost = Tensor::new(&[[0.50004f64, 0.5], [0.2, 0.8]], &dev).unwrap();
    assert!(soft_mutual_information(&almost, &good).is_ok());
}
