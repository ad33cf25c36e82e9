//! The shared `ModulationWindow` and the error conversion into `ModbalError`.

use modbal_core::ModbalError;
use modbal_modulate::*;

#[test]
fn window_is_half_open_and_checked() {
    let w = ModulationWindow::new(2, 5).unwrap();
    // [2, 5) = {2, 3, 4}.
    let inside: Vec<usize> = (0..8).filter(|&e| w.contains(e)).collect();
    assert_eq!(inside, vec![2, 3, 4]);
    assert_eq!(w.len(), 3);
    let empty = ModulationWindow::new(4, 4).unwrap();
    assert!(empty.is_empty() && !empty.contains(4));
    assert!(matches!(
        ModulationWindow::new(5, 4),
        Err(ModulateError::Param(_))
    ));
    let w: ModulationWindow = serde_json::from_str(r#"{"start": 0, "end": 51}"#).unwrap();
    assert!(w.contains(50) && !w.contains(51));
    assert!(serde_json::from_str::<ModulationWindow>(r#"{"start": 0, "stop": 51}"#).is_err());
}

#[test]
fn errors_convert_into_the_core_error() {
    let e: ModbalError = ModulateError::Param("x".into()).into();
    assert!(matches!(e, ModbalError::Config(_)));
    let e: ModbalError = ModulateError::Input("y".into()).into();
    assert!(matches!(e, ModbalError::Data(_)));
    let e: ModbalError = ModulateError::Candle(candle_core::Error::Msg("z".into())).into();
    assert!(matches!(e, ModbalError::Candle(_)));
    // `?` works inside a method hook returning modbal_core::Result.
    fn hook() -> modbal_core::Result<()> {
        OgmGe::new(OgmGeConfig {
            alpha: f64::NAN,
            ..Default::default()
        })?;
        Ok(())
    }
    assert!(hook().unwrap_err().to_string().contains("alpha"));
}
