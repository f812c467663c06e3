//! The console's two middlewares (after zero2prod's `reject_anonymous_users`):
//! `agent_required` wraps every page but sign-in and the stylesheet, so a handler receives the
//! signed-in agent (`web::ReqData<Agent>`) and never checks the session itself;
//! `refusals_as_pages` wraps the whole console and shows what a handler refused as a page.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage as _};

use super::reply::{refused, Refusal};
use super::state::Console;

/// Looks the request's session up (which moves its idle time): a live one puts its
/// [`super::session::Agent`] in the request for the handler; none (or one idle too long or past its
/// lifetime) is the sign-in redirect; a database that fails is that refusal.
pub async fn agent_required(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let Some(console) = req.app_data::<web::Data<Console>>().cloned() else {
        let missing = anyhow::anyhow!("the console's state is not registered with the app");
        return Ok(req
            .error_response(Refusal::Failed(missing))
            .map_into_right_body());
    };
    match console
        .sessions
        .find(&console.pool, &console.keys, req.request())
        .await
    {
        Ok(Some(agent)) => {
            req.extensions_mut().insert(agent);
            Ok(next.call(req).await?.map_into_left_body())
        }
        Ok(None) => Ok(req.error_response(Refusal::SignIn).map_into_right_body()),
        Err(e) => Ok(req.error_response(Refusal::from(e)).map_into_right_body()),
    }
}

/// An answer carrying a [`Refusal`] becomes the refusal's page, in the request's language.
pub async fn refusals_as_pages(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let res = next.call(req).await?;
    let page = match (
        res.response().error().and_then(|e| e.as_error::<Refusal>()),
        res.request().app_data::<web::Data<Console>>(),
    ) {
        (Some(refusal), Some(console)) => refused(res.request(), console, refusal),
        _ => return Ok(res.map_into_left_body()),
    };
    let (req, _) = res.into_parts();
    Ok(ServiceResponse::new(req, page).map_into_right_body())
}
