//! A real JWKS endpoint over HTTP on loopback, whose keys a test can rotate and whose fetches
//! it can count.

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::{json, Value};

use super::tokens::public_jwk;

#[derive(Clone)]
struct Published {
    keys: Arc<RwLock<Value>>,
    hits: Arc<AtomicUsize>,
}

pub struct JwksServer {
    pub url: String,
    published: Published,
    handle: ServerHandle,
}

async fn serve(published: web::Data<Published>) -> HttpResponse {
    published.hits.fetch_add(1, Ordering::SeqCst);
    let body = published.keys.read().unwrap().clone();
    HttpResponse::Ok().json(body)
}

impl JwksServer {
    /// Starts serving the fixture keys `kids`.
    pub fn start(kids: &[&str]) -> JwksServer {
        let published = Published {
            keys: Arc::new(RwLock::new(Value::Null)),
            hits: Arc::new(AtomicUsize::new(0)),
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().unwrap()
        );
        let data = web::Data::new(published.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/.well-known/jwks.json", web::get().to(serve))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        let jwks = JwksServer {
            url,
            published,
            handle,
        };
        jwks.publish(kids);
        jwks
    }

    /// Publishes exactly the fixture keys `kids`.
    pub fn publish(&self, kids: &[&str]) {
        let keys: Vec<Value> = kids.iter().map(|kid| public_jwk(kid)).collect();
        self.publish_raw(json!({ "keys": keys }));
    }

    pub fn publish_raw(&self, document: Value) {
        *self.published.keys.write().unwrap() = document;
    }

    /// Stops serving: the issuer is down (connections are refused).
    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }

    /// How many times the JWKS was fetched.
    pub fn hits(&self) -> usize {
        self.published.hits.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        actix_web::rt::spawn(async move { handle.stop(false).await });
    }
}
