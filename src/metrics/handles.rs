//! The metric handles of one layer, resolved once per label set and kept: a request then costs
//! a few atomic increments and small-map look-ups instead of building keys and asking the
//! recorder's registry for every series.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use metrics::{Counter, Gauge, Histogram, Key, Label, Metadata, Recorder, SharedString};

use super::labels::Route;
use super::names;

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// Most backends (distinct names) kept; names beyond are registered on every use.
const MAX_BACKENDS: usize = 1024;

const ROUTES: [Route; 6] = [
    Route::Messages,
    Route::ChatCompletions,
    Route::CountTokens,
    Route::Models,
    Route::Health,
    Route::Other,
];

fn route_index(route: Route) -> usize {
    ROUTES.iter().position(|&r| r == route).unwrap_or(5)
}

/// A multiply-rotate hasher (as rustc's Fx): the keys are few, small and set by the
/// configuration (label indexes, backend names), so SipHash's flood resistance buys nothing
/// and costs most of a look-up.
#[derive(Default)]
pub(crate) struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u16(&mut self, n: u16) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// How the `status` label is keyed: the code, or `0` for `error`.
pub(crate) type StatusKey = u16;

pub(crate) struct Handles {
    recorder: Option<Arc<dyn Recorder + Send + Sync>>,
    in_flight: OnceLock<Gauge>,
    duration: [OnceLock<Histogram>; 6],
    /// `anth`/`oai` × `hit`/`miss`/`bypass`.
    cache: [OnceLock<Counter>; 6],
    requests: RwLock<FxMap<(u8, StatusKey, u32), Counter>>,
    /// The first backend seen (in a single-backend stack, every answer's), without a look-up.
    default_backend: OnceLock<(Box<str>, Arc<BackendHandles>)>,
    backends: RwLock<FxMap<Box<str>, Arc<BackendHandles>>>,
}

/// The series labelled by one backend.
pub(crate) struct BackendHandles {
    name: SharedString,
    ttft: OnceLock<Histogram>,
    /// `ok`, `error`, `fallback`.
    upstream: [OnceLock<Counter>; 3],
    /// Model label index → `input`, `output`, `cache_read`.
    tokens: RwLock<FxMap<u32, Arc<[Counter; 3]>>>,
}

impl Handles {
    pub(crate) fn new(recorder: Option<Arc<dyn Recorder + Send + Sync>>) -> Self {
        Self {
            recorder,
            in_flight: OnceLock::new(),
            duration: Default::default(),
            cache: Default::default(),
            requests: RwLock::default(),
            default_backend: OnceLock::new(),
            backends: RwLock::default(),
        }
    }

    fn with_recorder<T>(&self, f: impl FnOnce(&dyn Recorder) -> T) -> T {
        match &self.recorder {
            Some(recorder) => f(recorder.as_ref()),
            None => metrics::with_recorder(f),
        }
    }

    fn counter(&self, name: &'static str, labels: Vec<Label>) -> Counter {
        self.with_recorder(|r| r.register_counter(&Key::from_parts(name, labels), &METADATA))
    }

    fn histogram(&self, name: &'static str, labels: Vec<Label>) -> Histogram {
        self.with_recorder(|r| r.register_histogram(&Key::from_parts(name, labels), &METADATA))
    }

    pub(crate) fn in_flight(&self) -> &Gauge {
        self.in_flight.get_or_init(|| {
            self.with_recorder(|r| {
                r.register_gauge(&Key::from_static_name(names::IN_FLIGHT), &METADATA)
            })
        })
    }

    pub(crate) fn duration(&self, route: Route) -> &Histogram {
        self.duration[route_index(route)].get_or_init(|| {
            self.histogram(
                names::DURATION,
                vec![Label::from_static_parts("route", route.as_str())],
            )
        })
    }

    pub(crate) fn cache(&self, namespace: &'static str, result: &'static str) -> &Counter {
        let ns = usize::from(namespace == "oai");
        let res = match result {
            "hit" => 0,
            "miss" => 1,
            _ => 2,
        };
        self.cache[ns * 3 + res].get_or_init(|| {
            self.counter(
                names::CACHE,
                vec![
                    Label::from_static_parts("namespace", namespace),
                    Label::from_static_parts("result", result),
                ],
            )
        })
    }

    pub(crate) fn requests(
        &self,
        route: Route,
        status: StatusKey,
        status_label: SharedString,
        model: u32,
        model_label: &SharedString,
    ) -> Counter {
        let key = (route_index(route) as u8, status, model);
        if let Some(counter) = read(&self.requests).get(&key) {
            return counter.clone();
        }
        let counter = self.counter(
            names::REQUESTS,
            vec![
                Label::from_static_parts("route", route.as_str()),
                Label::new("status", status_label),
                Label::new("model", model_label.clone()),
            ],
        );
        write(&self.requests).insert(key, counter.clone());
        counter
    }

    /// The handles of `backend`, made on first sight.
    pub(crate) fn backend(&self, backend: &str) -> Arc<BackendHandles> {
        if let Some((name, handles)) = self.default_backend.get()
            && **name == *backend
        {
            return Arc::clone(handles);
        }
        let handles = self.lookup_backend(backend);
        if self.default_backend.get().is_none() {
            let _ = self
                .default_backend
                .set((Box::from(backend), Arc::clone(&handles)));
        }
        handles
    }

    fn lookup_backend(&self, backend: &str) -> Arc<BackendHandles> {
        if let Some(handles) = read(&self.backends).get(backend) {
            return Arc::clone(handles);
        }
        let handles = Arc::new(BackendHandles {
            name: SharedString::from_shared(Arc::from(backend)),
            ttft: OnceLock::new(),
            upstream: Default::default(),
            tokens: RwLock::default(),
        });
        let mut backends = write(&self.backends);
        if backends.len() < MAX_BACKENDS {
            backends.insert(Box::from(backend), Arc::clone(&handles));
        }
        handles
    }

    pub(crate) fn ttft<'a>(&self, backend: &'a BackendHandles) -> &'a Histogram {
        backend.ttft.get_or_init(|| {
            self.histogram(
                names::TTFT,
                vec![Label::new("backend", backend.name.clone())],
            )
        })
    }

    pub(crate) fn upstream<'a>(
        &self,
        backend: &'a BackendHandles,
        outcome: &'static str,
    ) -> &'a Counter {
        let at = match outcome {
            "ok" => 0,
            "error" => 1,
            _ => 2,
        };
        backend.upstream[at].get_or_init(|| {
            self.counter(
                names::UPSTREAM,
                vec![
                    Label::new("backend", backend.name.clone()),
                    Label::from_static_parts("outcome", outcome),
                ],
            )
        })
    }

    pub(crate) fn tokens(
        &self,
        backend: &BackendHandles,
        model: u32,
        model_label: &SharedString,
    ) -> Arc<[Counter; 3]> {
        if let Some(counters) = read(&backend.tokens).get(&model) {
            return Arc::clone(counters);
        }
        let counter = |kind: &'static str| {
            self.counter(
                names::TOKENS,
                vec![
                    Label::from_static_parts("type", kind),
                    Label::new("model", model_label.clone()),
                    Label::new("backend", backend.name.clone()),
                ],
            )
        };
        let counters = Arc::new([counter("input"), counter("output"), counter("cache_read")]);
        write(&backend.tokens).insert(model, Arc::clone(&counters));
        counters
    }
}

impl std::fmt::Debug for Handles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handles").finish_non_exhaustive()
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}
