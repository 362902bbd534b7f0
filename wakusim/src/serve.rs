//! `wakusim serve`: the command line's operations over HTTP/JSON. Communities, messages and
//! runs go through the same [`Store`] and [`Runs`] as the command line; errors are
//! `{"error": …, "field": …}` with the status of [`Error::status`].

use std::{
    io::Read as _,
    net::SocketAddr,
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use serde::Serialize;
use serde_json::Value;
use tiny_http::{Header, Method, Request, Response, Server};

use crate::{
    community::{NewCommunity, NewMessage, Store},
    error::Error,
    openapi,
    runs::{Job, Runs},
    scenario::Scenario,
    sweep::{self, Param},
};

/// Largest request body (a scenario or a message with its payload).
const MAX_BODY: u64 = 1 << 20;

/// The server's state: the community store and the runs it started.
pub struct Service {
    pub store: Store,
    pub runs: Runs,
    /// Where runs write their captures and reports.
    pub runs_dir: PathBuf,
}

/// The endpoints, with what their path holds.
enum Route {
    OpenApi,
    Communities,
    Community(String),
    Messages(String),
    Runs,
    Sweeps,
    Run(String),
    Stop(String),
    Report(String),
}

impl Route {
    fn parse(path: &str) -> Option<Route> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        Some(match segments.as_slice() {
            ["openapi.json"] => Route::OpenApi,
            ["communities"] => Route::Communities,
            ["communities", name] => Route::Community((*name).into()),
            ["communities", name, "messages"] => Route::Messages((*name).into()),
            ["runs"] => Route::Runs,
            ["sweeps"] => Route::Sweeps,
            ["runs", id] => Route::Run((*id).into()),
            ["runs", id, "stop"] => Route::Stop((*id).into()),
            ["runs", id, "report"] => Route::Report((*id).into()),
            _ => return None,
        })
    }

    fn allowed(&self) -> &'static str {
        match self {
            Route::Communities | Route::Runs => "GET, POST",
            Route::Messages(_) | Route::Stop(_) | Route::Sweeps => "POST",
            Route::OpenApi | Route::Community(_) | Route::Run(_) | Route::Report(_) => "GET",
        }
    }
}

/// A reply: status and JSON body.
struct Reply(u16, String);

fn json<T: Serialize>(status: u16, value: &T) -> Result<Reply, Error> {
    serde_json::to_string_pretty(value)
        .map(|body| Reply(status, body))
        .map_err(|e| Error::Internal(e.to_string()))
}

/// Parses a JSON body; a bad value is named by the top-level key whose removal cures it.
fn parse<T: serde::de::DeserializeOwned>(body: &str) -> Result<T, Error> {
    let e = match serde_json::from_str(body) {
        Ok(value) => return Ok(value),
        Err(e) => e,
    };
    let culprit = serde_json::from_str::<serde_json::Map<String, Value>>(body)
        .ok()
        .and_then(|object| {
            object.keys().find_map(|key| {
                let mut rest = object.clone();
                rest.remove(key);
                serde_json::from_value::<T>(Value::Object(rest))
                    .is_ok()
                    .then(|| key.clone())
            })
        });
    match culprit {
        Some(field) => Err(Error::invalid(field, e.to_string())),
        None => Err(Error::from_check(&e.into())),
    }
}

/// The value of `key` in a query string (`a=1&b=2`), percent-decoding only `%2C` (commas).
fn query_value<'a>(query: &'a str, key: &str) -> Option<std::borrow::Cow<'a, str>> {
    query.split('&').find_map(|pair| {
        let value = pair.strip_prefix(key)?.strip_prefix('=')?;
        Some(if value.contains('%') {
            value.replace("%2C", ",").replace("%2c", ",").into()
        } else {
            value.into()
        })
    })
}

/// The sweep a `POST /sweeps` query asks for: `param` and `values`.
fn sweep_query(query: &str) -> Result<(Param, Vec<f64>), Error> {
    let param = query_value(query, "param")
        .ok_or_else(|| Error::invalid("param", "missing (?param=nodes&values=4,8,16)"))?;
    let param = <Param as clap::ValueEnum>::from_str(&param, false).map_err(|_| {
        Error::invalid(
            "param",
            format!("{param} is none of nodes, communities_per_shard, rate, d, size"),
        )
    })?;
    let values = query_value(query, "values")
        .ok_or_else(|| Error::invalid("values", "missing (?param=nodes&values=4,8,16)"))?;
    let values = sweep::parse_values(param, &values).map_err(|e| Error::from_check(&e))?;
    Ok((param, values))
}

fn run_id(id: &str) -> Result<u64, Error> {
    id.parse()
        .map_err(|_| Error::NotFound(format!("no run {id}")))
}

impl Service {
    /// Serves on `listen` until `stop` is set, then stops the runs and waits for their cleanup.
    pub fn serve(&self, listen: SocketAddr, stop: &AtomicBool) -> anyhow::Result<()> {
        let server =
            Server::http(listen).map_err(|e| anyhow::anyhow!("listen on {listen}: {e}"))?;
        let bound = server
            .server_addr()
            .to_ip()
            .map_or_else(|| listen.to_string(), |a| a.to_string());
        // The first line on stdout is the address, for scripts that asked for port 0.
        println!("listening on http://{bound}");
        while !stop.load(Ordering::SeqCst) {
            if let Some(request) = server.recv_timeout(Duration::from_millis(200))? {
                self.answer(request);
            }
        }
        self.runs.stop_all();
        Ok(())
    }

    fn answer(&self, mut request: Request) {
        let mut body = String::new();
        let read = request
            .as_reader()
            .take(MAX_BODY)
            .read_to_string(&mut body)
            .map_err(|e| Error::invalid("body", format!("not UTF-8 text: {e}")));
        let url = request.url().to_owned();
        let (path, query) = url.split_once('?').unwrap_or((&url, ""));
        let json_body = request.headers().iter().any(|h| {
            h.field.equiv("Content-Type") && h.value.as_str().starts_with("application/json")
        });
        let reply = read.and_then(|_| self.handle(request.method(), path, query, &body, json_body));
        let Reply(status, text) = reply.unwrap_or_else(|e| {
            let body = serde_json::json!({ "error": e.to_string(), "field": e.field() });
            Reply(e.status(), body.to_string())
        });
        let mut response = Response::from_string(text)
            .with_status_code(status)
            .with_header(header("Content-Type", "application/json"));
        if status == 405
            && let Some(route) = Route::parse(path)
        {
            response = response.with_header(header("Allow", route.allowed()));
        }
        if let Err(e) = request.respond(response) {
            tracing::debug!("reply to {url}: {e}");
        }
    }

    fn handle(
        &self,
        method: &Method,
        path: &str,
        query: &str,
        body: &str,
        json_body: bool,
    ) -> Result<Reply, Error> {
        let route =
            Route::parse(path).ok_or_else(|| Error::NotFound(format!("no endpoint {path}")))?;
        match (method, &route) {
            (Method::Get, Route::OpenApi) => Ok(Reply(200, openapi::document().to_string())),
            (Method::Get, Route::Communities) => json(200, &self.store.list()?),
            (Method::Post, Route::Communities) => {
                json(201, &self.store.create(parse::<NewCommunity>(body)?)?)
            }
            (Method::Get, Route::Community(name)) => {
                let private = query.split('&').any(|q| q == "private_key=true");
                json(200, &self.store.get(name, private)?)
            }
            (Method::Post, Route::Messages(name)) => {
                json(201, &self.store.publish(name, parse::<NewMessage>(body)?)?)
            }
            (Method::Get, Route::Runs) => json(200, &self.runs.list()),
            (Method::Post, Route::Runs) => {
                let scenario = self.scenario(body, json_body)?;
                json(202, &self.runs.start(Job::Run(scenario), &self.runs_dir)?)
            }
            (Method::Post, Route::Sweeps) => {
                let (param, values) = sweep_query(query)?;
                let scenario = self.scenario(body, json_body)?;
                for v in &values {
                    param
                        .apply(&scenario, *v)
                        .map_err(|e| Error::from_check(&e))?;
                }
                let job = Job::Sweep {
                    scenario,
                    param,
                    values,
                };
                json(202, &self.runs.start(job, &self.runs_dir)?)
            }
            (Method::Get, Route::Run(id)) => json(200, &self.runs.info(run_id(id)?)?),
            (Method::Post, Route::Stop(id)) => json(202, &self.runs.stop(run_id(id)?)?),
            (Method::Get, Route::Report(id)) => Ok(Reply(200, self.runs.report(run_id(id)?)?)),
            _ => Err(Error::MethodNotAllowed(format!(
                "{method} {path}: allowed {}",
                route.allowed()
            ))),
        }
    }
}

impl Service {
    /// A scenario from a request body (TOML, or JSON with the same fields), stored communities
    /// resolved.
    fn scenario(&self, body: &str, json_body: bool) -> Result<Scenario, Error> {
        let mut scenario = if json_body || body.trim_start().starts_with('{') {
            Scenario::parse_json(body)
        } else {
            Scenario::parse(body)
        }
        .map_err(|e| Error::from_check(&e))?;
        self.store.resolve(&mut scenario)?;
        Ok(scenario)
    }
}

fn header(name: &str, value: &str) -> Header {
    // Both are ASCII constants or a fixed list of methods.
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("an ASCII header")
}
